"""Statistics, tables, figures and reports over a release (the SAM paper's sections 5-6). Never imports Ray."""
