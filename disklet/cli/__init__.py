"""kctl: the disklet command line (DESIGN.md §5). See docs/kctl.md."""
