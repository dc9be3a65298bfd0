"""The AWS provider: ``provider`` (instance lifecycle), ``plan`` (launch attempts from the
catalog), ``regions`` (key pair, security group, image per region), ``ec2`` (clients, calls,
tags), ``errors`` and ``loopback`` (emulated instances as local nodes)."""
