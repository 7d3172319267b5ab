"""Reports: reading JUnit back, baseline comparison, known failures, summaries."""
