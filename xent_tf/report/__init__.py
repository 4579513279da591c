"""Figures and pages: the only package that imports matplotlib.

``plotting`` draws PNG files (Agg backend, no screen); ``html_page`` wraps Markdown-rendered
content and its plots into one self-contained HTML page. A run's curves (``train.pipeline``), a
study's report (``claims.study_report``) and the claims ledger (``claims.ledger_render``) are
drawn with them.

Imports nothing else of ``xent_tf``.
"""
