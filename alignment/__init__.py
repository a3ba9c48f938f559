"""traitlab.alignment"""
