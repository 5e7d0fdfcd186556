"""What a run, a sweep or a comparison means for people: tables, reports and plots, out of the pipeline.

The pipeline runs and records (results.json, item records); everything here reads those records
and writes report.md, summary tables and PNG plots.  Nothing here runs a model.
"""
