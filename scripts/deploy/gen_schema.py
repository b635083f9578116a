"""Writes helm/baton/values.schema.json (run by hand after changing values.yaml; the
validation script checks that the committed schema is what this produces)."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "helm/baton/values.schema.json"


def obj(props, required=(), extra=False):
    o = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        o["required"] = list(required)
    return o


S = {"type": "string"}
B = {"type": "boolean"}
NAME = {"type": "string", "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", "maxLength": 63}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
NONNEG = {"type": "integer", "minimum": 0}
POS = {"type": "integer", "minimum": 1}
ANYOBJ = {"type": "object"}
LIST = {"type": "array"}
LIST_OBJ = {"type": "array", "items": {"type": "object"}}
QTY = {"anyOf": [{"type": "string", "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"}, {"type": "number", "minimum": 0}]}
RES = obj({
    "requests": obj({"cpu": QTY, "memory": QTY, "ephemeral-storage": QTY}),
    "limits": obj({"cpu": QTY, "memory": QTY, "ephemeral-storage": QTY}),
})
IMAGE = obj({
    "repository": {"type": "string", "minLength": 1},
    "tag": S,
    "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
})
ENV = {"type": "array", "items": obj({"name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                      "value": S, "valueFrom": ANYOBJ}, required=["name"])}
PDB = obj({"enabled": B, "maxUnavailable": {"anyOf": [NONNEG, {"type": "string", "pattern": r"^[0-9]+%$"}]}})
GRACE = {"anyOf": [{"type": "null"}, POS]}
NATS_AUTH_PROPS = {
    "type": {"enum": ["none", "userPassword", "token", "creds", "nkey"]},
    "existingSecret": NAME,
    "user": S,
    "passwordKey": S, "tokenKey": S, "credsKey": S, "nkeyKey": S,
}
NATS_AUTH = obj(NATS_AUTH_PROPS)
TLS = {"enabled": B, "existingSecret": NAME, "caKey": S, "certKey": S, "keyKey": S}
POD_PLACEMENT = {"nodeSelector": {"type": "object", "additionalProperties": S}, "tolerations": LIST_OBJ,
                 "affinity": ANYOBJ, "topologySpreadConstraints": LIST_OBJ,
                 "podAnnotations": {"type": "object", "additionalProperties": S},
                 "podLabels": {"type": "object", "additionalProperties": S}}
WORKER_AUTOSCALING = obj({
    "minReplicaCount": NONNEG, "maxReplicaCount": POS,
    "lagThreshold": {"anyOf": [{"type": "null"}, POS]}, "activationLagThreshold": NONNEG,
    "pollingInterval": POS, "cooldownPeriod": NONNEG,
    "minReplicas": POS, "maxReplicas": POS,
    "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
})
WORKER_PROPS = {
    "replicas": NONNEG,
    "concurrency": {"type": "integer", "minimum": 1, "maximum": 10000},
    "ackWaitSecs": POS,
    "maxDeliver": {"type": "integer", "minimum": -1},
    "drainTimeoutSecs": NONNEG,
    "terminationGracePeriodSeconds": GRACE,
    "resources": RES,
    "env": ENV,
    "podDisruptionBudget": PDB,
    **POD_PLACEMENT,
}
WORKER = obj({**WORKER_PROPS, "enabled": B, "image": IMAGE, "natsAuth": NATS_AUTH,
              "inboxPrefix": S, "autoscaling": WORKER_AUTOSCALING})

schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Baton Helm chart values",
    **obj({
        "nameOverride": S, "fullnameOverride": S,
        "image": obj({"registry": S, "tag": S, "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}),
        "imagePullSecrets": {"type": "array", "items": obj({"name": NAME}, required=["name"])},
        "nats": obj({
            "url": {"type": "string", "pattern": r"^(nats|tls|ws|wss)://[^,\s]+(,(nats|tls|ws|wss)://[^,\s]+)*$"},
            "auth": NATS_AUTH,
            "tls": obj({**TLS, "required": B}),
        }, required=["url"]),
        "redis": obj({
            "url": {"type": "string", "pattern": r"^rediss?://\S+$"},
            "auth": obj({"user": S, "existingSecret": NAME, "passwordKey": S, "userKey": S}),
            "tls": obj(TLS),
        }, required=["url"]),
        "admin": obj({"port": PORT}),
        "coordinator": obj({
            "enabled": B,
            "replicas": POS,
            "image": IMAGE,
            "shutdownGraceSecs": POS,
            "terminationGracePeriodSeconds": GRACE,
            "config": ANYOBJ,
            "natsAuth": NATS_AUTH,
            "inboxPrefix": S,
            "env": ENV,
            "resources": RES,
            "podDisruptionBudget": PDB,
            **POD_PLACEMENT,
        }),
        "workerDefaults": obj(WORKER_PROPS),
        "workers": {
            "type": "object",
            # The agent type: a Baton agent name that is also a DNS label.
            "propertyNames": {"pattern": r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"},
            "additionalProperties": {"anyOf": [{"type": "null"}, WORKER]},
        },
        "autoscaling": obj({
            "keda": obj({
                "enabled": B, "natsServerMonitoringEndpoint": {"type": "string", "pattern": r"^[^/\s]+:[0-9]+$"},
                "useHttps": B, "account": {"type": "string", "minLength": 1}, "stream": {"type": "string", "minLength": 1},
                "pollingInterval": POS, "cooldownPeriod": NONNEG, "minReplicaCount": NONNEG, "maxReplicaCount": POS,
                "lagThreshold": {"anyOf": [{"type": "null"}, POS]}, "activationLagThreshold": NONNEG,
            }),
            "hpa": obj({"enabled": B, "minReplicas": POS, "maxReplicas": POS,
                        "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100}}),
        }),
        "serviceAccount": obj({"create": B, "name": S, "annotations": {"type": "object", "additionalProperties": S}}),
        "serviceMonitor": obj({"enabled": B, "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                               "scrapeTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                               "labels": {"type": "object", "additionalProperties": S}}),
        "networkPolicy": obj({
            "enabled": B, "ingressFrom": LIST_OBJ,
            "egress": obj({"enabled": B, "natsPort": PORT, "redisPort": PORT,
                           "natsTo": LIST_OBJ, "redisTo": LIST_OBJ, "extra": LIST_OBJ}),
        }),
        "tmpSizeLimit": QTY,
        "otlpEndpoint": {"type": "string", "pattern": r"^(https?://\S+)?$"},
    }),
}
# Helm passes global values to every chart; allow them.
schema["properties"]["global"] = ANYOBJ

text = json.dumps(schema, indent=2) + "\n"
if "--check" in sys.argv:
    if OUT.read_text() != text:
        sys.exit(f"{OUT} is stale: run python3 scripts/deploy/gen_schema.py")
else:
    OUT.write_text(text)
