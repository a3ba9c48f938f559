"""traitlab.evals: eval suites (YAML), conversation generation, trait reports, judge benchmark, demo."""
