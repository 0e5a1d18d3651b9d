"""Stage 4, reporting: results.json, junit.xml, the terminal summary, report.html, and merging shards."""
