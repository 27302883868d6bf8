"""Cases: the spec language, loading and expansion, the float64 oracle, and the pytest module."""
