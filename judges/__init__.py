"""traitlab.judges"""
