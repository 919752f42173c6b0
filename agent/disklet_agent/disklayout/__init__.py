"""DiskLayout on the node: classifier (pure), management mode, gate (plan_apply) and apply pipeline."""
