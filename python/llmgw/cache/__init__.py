"""Semantic cache: near-miss guards (`nearmiss`) and the defaults measured for them (`defaults`)."""
