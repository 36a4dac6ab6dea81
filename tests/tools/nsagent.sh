#!/bin/bash
# An rsh agent for mpirun that "logs in" to a test host by entering its network
# namespace: CLV_NS_MAP="10.231.0.1=ns0,10.231.0.2=ns1" maps addresses to
# namespaces. Used by the several-hosts test in tests/cases.sh.
host=$1; shift
while [[ $host == -* ]]; do host=$1; shift; done
ns=""
IFS=',' read -ra pairs <<<"${CLV_NS_MAP:-}"
for p in "${pairs[@]}"; do [[ ${p%%=*} == "$host" ]] && ns=${p#*=}; done
[[ -n $ns ]] || { echo "nsagent: no namespace for host $host (CLV_NS_MAP=$CLV_NS_MAP)" >&2; exit 1; }
exec ip netns exec "$ns" /bin/sh -c "$*"
