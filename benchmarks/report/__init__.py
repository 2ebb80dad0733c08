"""Reports rendered from raw per-job JSON only: tables (Markdown/CSV/LaTeX), figures, a page."""
