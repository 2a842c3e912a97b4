"""Anonymous query (匿踪查询): one enterprise's answer without the zone learning which enterprise."""
