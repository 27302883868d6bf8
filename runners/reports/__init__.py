"""Report writers: the result model, run metadata, the matrix, check and mutation views, timing, comparisons, HTML."""
