"""Shipped examples: workflow files (`examples/workflows/`) and the example business API
(`python -m examples.business_api`) that Nova's and Casey's tools talk to out of the box."""
