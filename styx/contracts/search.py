"""The Temporal search attributes Styx registers and sets, so the web UI can filter by them."""

from temporalio.common import SearchAttributeKey

CLUSTER_KEY = SearchAttributeKey.for_keyword("StyxCluster")
JOB_STATUS_KEY = SearchAttributeKey.for_keyword("StyxJobStatus")
REPO_KEY = SearchAttributeKey.for_keyword("StyxRepo")
SEARCH_ATTRIBUTE_KEYS = (CLUSTER_KEY, JOB_STATUS_KEY, REPO_KEY)
#: Name -> Temporal type, as ``temporal operator search-attribute create`` takes them.
SEARCH_ATTRIBUTES: dict[str, str] = {key.name: "Keyword" for key in SEARCH_ATTRIBUTE_KEYS}
