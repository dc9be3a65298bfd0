"""Orphan reconcile: cloud instances tagged with this deployment that belong to no live
cluster (a launch whose workflow was terminated by hand, a DB restored from an old backup)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity

from styx.contracts.providers import ReconcileInput, ReconcileOutput
from styx.contracts.clusters import CLUSTER_GONE, ClusterStatus
from styx.activities.heartbeat import heartbeating
from styx.db import Database

LIVE = tuple(s for s in ClusterStatus if s not in CLUSTER_GONE)


class ReconcileActivities:
    def __init__(self, db: Database, aws: Any | None) -> None:
        self.db, self.aws = db, aws

    @activity.defn(name="find_orphans")
    async def find_orphans(self, inp: ReconcileInput) -> ReconcileOutput:
        if self.aws is None:
            return ReconcileOutput()
        async with heartbeating():
            instances = await self.aws.list_deployment_instances(inp.region)
            clusters = await asyncio.to_thread(self.db.clusters.list, status=LIVE)
            live = {c.name for c in clusters}
            orphans = [i for i in instances if i.get("cluster") not in live]
            terminated: list[str] = []
            if inp.terminate:
                for name in sorted({o["cluster"] for o in orphans if o.get("cluster")}):
                    region = next(o["region"] for o in orphans if o["cluster"] == name)
                    await self.aws.terminate(name, region)
                    terminated += [o["instance_id"] for o in orphans if o["cluster"] == name and o["region"] == region]
        return ReconcileOutput(orphans=orphans, terminated=terminated)
