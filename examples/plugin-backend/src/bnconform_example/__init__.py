"""An example bnconform backend plugin."""
