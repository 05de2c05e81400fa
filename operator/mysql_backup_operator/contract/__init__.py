"""The contract between the operator and the agent, in one place both sides import.

- `config`: what the operator puts in the Job's env (MBO_AGENT_CONFIG plus secret env vars) and
  how the agent reads it back;
- `keys`: where a backup's objects live in the bucket;
- `manifest`: the JSON document stored next to a backup's objects (v1 and v2);
- `result`: the one JSON line the agent writes to its termination message;
- `s3`: the boto3 client factory both sides use with the same timeouts and retries.

The operator never imports from `agent/`; the agent never imports kopf. Only this package (and
`api`, the shared constants) is imported by both.
"""
