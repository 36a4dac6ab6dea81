# bench/idle.sh — sourced by the benchmark scripts. wait_idle: best effort,
# until both CPUs are >= 97% idle over 2 s, at most ~2 min (WAIT_IDLE=0 skips
# it). A shared host's other tenants stay invisible to it (bench/README.md).
wait_idle() {
    [[ ${WAIT_IDLE:-1} == 0 ]] && return 0
    local i u n s id io irq sirq st t1 i1 t2 i2
    for i in $(seq 1 60); do
        read -r _ u n s id io irq sirq st _ </proc/stat; t1=$((u + n + s + id + io + irq + sirq + st)); i1=$id
        sleep 2
        read -r _ u n s id io irq sirq st _ </proc/stat; t2=$((u + n + s + id + io + irq + sirq + st)); i2=$id
        (( 100 * (i2 - i1) / (t2 - t1) >= 97 )) && return 0
    done
    echo "$(basename "$0"): machine never went idle; measuring anyway" >&2
}
