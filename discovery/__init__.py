"""traitlab.discovery"""
