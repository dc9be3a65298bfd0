"""Styx: durable clusters, jobs and git-push runs on Temporal."""
