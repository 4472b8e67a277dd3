"""The cleanup job: a one-shot batch process a Kubernetes CronJob runs on a schedule."""
