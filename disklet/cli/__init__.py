"""kctl: the disklet command line (docs/kctl.md). See docs/kctl.md."""
