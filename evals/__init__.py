"""traitlab.evals"""
