"""`bnconform fuzz`: property-based scenarios against the float64 oracle (docs/fuzz.md)."""
