#!/bin/sh
# glcleanup stub control, run on the registry host. A FIXED script: glcleanup never edits or
# generates it; everything it acts on arrives as positional arguments (validated by glcleanup) or
# lives in DIR. `stub on`, `stub off`, `stub status` and the watcher all go through it, so the
# watcher's automatic restore is exactly the restore `stub off` runs.
#
#   stubctl.sh check   DIR DEPLOY PROJECT               nginx -t (and compose config) on DIR/nginx.conf
#   stubctl.sh start   DIR DEPLOY PROJECT               start the stub; prints "pid N"
#   stubctl.sh confirm DIR SINCE UNTIL PID              mark the stub verified (ends the guard); installs
#                                                       DIR/state.json.confirmed as the state, if present
#   stubctl.sh restore DIR REASON DEPLOY PROJECT [START_REGISTRY_ARGV...]
#                                                       stop the stub, run the start command, retire state
#   stubctl.sh watch   DIR GUARD FOR QUIET INTERVAL DEPLOY PROJECT [START_REGISTRY_ARGV...]
#                                                       restore when unconfirmed after GUARD s, FOR s after
#                                                       confirmation, or QUIET s without deletion traffic
#                                                       (DIR/activity.log: DELETEs, tags/list) (0 = off)
#   stubctl.sh status  DIR                              key=value lines for `stub status` (DEPLOY and
#                                                       PROJECT come from DIR/deploy, written by `on`)
#   stubctl.sh listeners                                listening TCP sockets (ss, else netstat)
#
# DEPLOY is nginx (host binary), compose (docker compose) or compose-v1 (docker-compose).
# Exit codes: 0 ok, 64 usage, 70 stub would not stop, 71 start-registry failed, 72 nginx missing,
# 73 config check failed, 74 start failed, 75 busy (another restore holds the lock), 76 not on.
set -u
PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin"

nginx_bin() {
    command -v nginx 2>/dev/null && return 0
    for p in /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    return 1
}

compose() {  # compose DIR DEPLOY PROJECT ARGS...
    c_dir=$1 c_deploy=$2 c_project=$3; shift 3
    if [ "$c_deploy" = compose-v1 ]; then
        docker-compose -p "$c_project" -f "$c_dir/docker-compose.yml" "$@"
    else
        docker compose -p "$c_project" -f "$c_dir/docker-compose.yml" "$@"
    fi
}

# A pid is ours when it is alive, not a zombie, and its command line names DIR/ (nginx keeps its
# argv, "-p DIR/ ... -c DIR/nginx.conf", in the master's title; the watcher runs DIR/stubctl.sh).
# Without /proc we can only trust kill -0.
ours() {  # ours PID DIR
    kill -0 "$1" 2>/dev/null || return 1
    [ -d /proc ] || return 0
    [ -r "/proc/$1/cmdline" ] || return 1
    tr '\000' ' ' < "/proc/$1/cmdline" | grep -F -q -- "$2/"
}

read_pid() {  # read_pid FILE -> digits or nothing
    r_pid=$(cat "$1" 2>/dev/null | head -n 1)
    case $r_pid in ''|*[!0-9]*) echo "" ;; *) echo "$r_pid" ;; esac
}

now() { date +%s; }
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# --- the lock: mkdir is atomic; a lock whose holder died is taken over ---------------------------
take_lock() {  # take_lock DIR WAIT_SECONDS
    l_tries=$(( $2 * 10 ))
    while :; do
        if mkdir "$1/.lock" 2>/dev/null; then
            echo $$ > "$1/.lock/pid"
            return 0
        fi
        l_pid=$(read_pid "$1/.lock/pid")
        if [ -n "$l_pid" ] && ! kill -0 "$l_pid" 2>/dev/null; then
            rm -rf "$1/.lock"
            continue
        fi
        [ "$l_tries" -le 0 ] && return 1
        l_tries=$((l_tries - 1))
        sleep 0.1
    done
}
drop_lock() { rm -rf "$1/.lock"; }

# --- stop the stub ---------------------------------------------------------------------------------
stop_nginx() {  # stop_nginx DIR
    s_pid=$(read_pid "$1/nginx.pid")
    if [ -n "$s_pid" ] && ours "$s_pid" "$1"; then
        kill -TERM "$s_pid" 2>/dev/null
        s_i=0
        while ours "$s_pid" "$1"; do
            s_i=$((s_i + 1))
            if [ "$s_i" -gt 100 ]; then
                kill -KILL -- "-$s_pid" 2>/dev/null || kill -KILL "$s_pid" 2>/dev/null
                sleep 0.2
                break
            fi
            sleep 0.1
        done
        if ours "$s_pid" "$1"; then
            echo "stubctl: nginx $s_pid did not stop" >&2
            return 1
        fi
    fi
    rm -f "$1/nginx.pid"
    return 0
}

stop_stub() {  # stop_stub DIR DEPLOY PROJECT
    case $2 in
        nginx) stop_nginx "$1" ;;
        compose|compose-v1)
            compose "$1" "$2" "$3" down --timeout 5 >&2 && return 0
            # down failed: if compose cannot even list the service, no engine is reachable, so no
            # stub container can be running (a start that never happened); otherwise it is a failure.
            if ! c_ids=$(compose "$1" "$2" "$3" ps -q stub 2>/dev/null); then
                echo "stubctl: docker engine unreachable: no stub container can be running" >&2
                return 0
            fi
            [ -z "$c_ids" ] ;;
        *) echo "stubctl: unknown deploy $2" >&2; return 64 ;;
    esac
}

stop_watcher() {  # stop_watcher DIR (never ourselves)
    w_pid=$(read_pid "$1/watcher.pid")
    if [ -n "$w_pid" ] && [ "$w_pid" != "$$" ] && ours "$w_pid" "$1"; then
        kill -TERM "$w_pid" 2>/dev/null
    fi
    rm -f "$1/watcher.pid"
}

# restore with the lock held: stop the stub, run the admin's start command as given (an argv),
# then retire state.json so `off` again says "already off". When the start command fails the state
# stays, so a second `off` retries it.
restore_locked() {  # DIR REASON DEPLOY PROJECT [START...]
    r_dir=$1 r_reason=$2 r_deploy=$3 r_project=$4; shift 4
    if [ ! -f "$r_dir/state.json" ]; then
        echo "already-off"
        return 0
    fi
    echo "$(stamp) restore ($r_reason): stopping the stub" >&2
    stop_stub "$r_dir" "$r_deploy" "$r_project" || return 70
    if [ $# -gt 0 ]; then
        echo "$(stamp) restore ($r_reason): running the start-registry command" >&2
        "$@"
        r_rc=$?
        if [ "$r_rc" -ne 0 ]; then
            echo "$r_rc" > "$r_dir/restore-failed"
            echo "start-registry-failed $r_rc"
            return 71
        fi
    fi
    rm -f "$r_dir/restore-failed" "$r_dir/confirmed"
    mv -f "$r_dir/state.json" "$r_dir/last-state.json"
    printf 'reason=%s\nat=%s\n' "$r_reason" "$(stamp)" > "$r_dir/last-off"
    stop_watcher "$r_dir"
    echo "restored $r_reason"
    return 0
}

cmd_restore() {
    [ $# -ge 4 ] || exit 64
    take_lock "$1" 60 || { echo "busy"; exit 75; }
    restore_locked "$@"
    rc=$?
    drop_lock "$1"
    exit "$rc"
}

# --- check and start -----------------------------------------------------------------------------
cmd_check() {  # DIR DEPLOY PROJECT
    [ $# -eq 3 ] || exit 64
    mkdir -p "$1/tmp" || exit 73
    case $2 in
        compose|compose-v1)
            compose "$1" "$2" "$3" config -q || exit 73 ;;
    esac
    if bin=$(nginx_bin); then
        "$bin" -t -q -p "$1/" -e "$1/error.log" -c "$1/nginx.conf" || exit 73
        rm -f "$1/nginx.pid"     # nginx -t leaves an empty pid file behind
    elif [ "$2" = nginx ]; then
        echo "stubctl: nginx not found on this host" >&2
        exit 72
    else
        compose "$1" "$2" "$3" run --rm --no-deps stub \
            nginx -t -q -p "$1/" -e "$1/error.log" -c "$1/nginx.conf" || exit 73
    fi
    exit 0
}

cmd_start() {  # DIR DEPLOY PROJECT
    [ $# -eq 3 ] || exit 64
    case $2 in
        nginx)
            bin=$(nginx_bin) || { echo "stubctl: nginx not found on this host" >&2; exit 72; }
            "$bin" -p "$1/" -e "$1/error.log" -c "$1/nginx.conf" || exit 74
            i=0
            while :; do       # the daemon writes its pid just after the parent returns
                pid=$(read_pid "$1/nginx.pid")
                [ -n "$pid" ] && break
                i=$((i + 1)); [ "$i" -gt 50 ] && exit 74
                sleep 0.1
            done
            echo "pid $pid" ;;
        compose|compose-v1)
            compose "$1" "$2" "$3" up -d >&2 || exit 74
            echo "pid $(compose "$1" "$2" "$3" ps -q stub | head -n 1)" ;;
        *) exit 64 ;;
    esac
}

cmd_confirm() {  # DIR SINCE UNTIL PID
    [ $# -eq 4 ] || exit 64
    take_lock "$1" 10 || exit 75
    if [ ! -f "$1/state.json" ]; then rm -f "$1/state.json.confirmed"; drop_lock "$1"; exit 76; fi
    # the state with since/until/pid filled in, written next to it by glcleanup, replaces it atomically
    [ -f "$1/state.json.confirmed" ] && mv -f "$1/state.json.confirmed" "$1/state.json"
    printf 'since=%s\nuntil=%s\npid=%s\nconfirmed_epoch=%s\n' "$2" "$3" "$4" "$(now)" > "$1/confirmed.tmp"
    mv -f "$1/confirmed.tmp" "$1/confirmed"
    drop_lock "$1"
    exit 0
}

# --- the watcher -----------------------------------------------------------------------------------
fsize() { wc -c < "$1" 2>/dev/null | tr -d ' ' || echo 0; }

cmd_watch() {  # DIR GUARD FOR QUIET INTERVAL DEPLOY PROJECT [START...]
    [ $# -ge 7 ] || exit 64
    dir=$1 guard=$2 forsecs=$3 quiet=$4 interval=$5; shift 5
    exec >> "$dir/watcher.log" 2>&1 < /dev/null
    echo $$ > "$dir/watcher.pid"
    sp=""
    trap '[ -n "$sp" ] && kill "$sp" 2>/dev/null; exit 0' TERM INT
    started=$(now)
    confirmed_at=""
    last_size=0
    last_change=0
    echo "$(stamp) watcher $$: guard ${guard}s, for ${forsecs}s, quiet ${quiet}s"
    while :; do
        [ -f "$dir/state.json" ] || { echo "$(stamp) state gone, watcher exits"; exit 0; }
        t=$(now)
        reason=""
        if [ -f "$dir/confirmed" ]; then
            if [ -z "$confirmed_at" ]; then
                confirmed_at=$t
                last_change=$t
                last_size=$(fsize "$dir/activity.log")
                if [ "$forsecs" -eq 0 ] && [ "$quiet" -eq 0 ]; then
                    echo "$(stamp) stub confirmed; nothing more to watch"
                    rm -f "$dir/watcher.pid"
                    exit 0
                fi
            fi
            size=$(fsize "$dir/activity.log")
            if [ "$size" != "$last_size" ]; then last_size=$size; last_change=$t; fi
            if [ "$forsecs" -gt 0 ] && [ $((t - confirmed_at)) -ge "$forsecs" ]; then reason=expired; fi
            # not_before: GitLab's latest pending retry (epoch, written by `stub on`); the quiet period
            # never ends before it, and counts from it, so that retry still reaches the stub
            nb=0
            [ -f "$dir/not_before" ] && nb=$(tr -cd 0-9 < "$dir/not_before")
            quiet_from=$last_change
            [ -n "$nb" ] && [ "$nb" -gt "$quiet_from" ] && quiet_from=$nb
            if [ "$quiet" -gt 0 ] && [ $((t - quiet_from)) -ge "$quiet" ]; then reason=${reason:-quiet}; fi
        elif [ $((t - started)) -ge "$guard" ]; then
            reason=unconfirmed
        fi
        if [ -n "$reason" ]; then
            if take_lock "$dir" 60; then
                if [ "$reason" = unconfirmed ] && [ -f "$dir/confirmed" ]; then
                    drop_lock "$dir"          # confirmed while we took the lock
                    continue
                fi
                restore_locked "$dir" "$reason" "$@"
                rc=$?
                drop_lock "$dir"
                echo "$(stamp) watcher restore ($reason) ended with $rc"
                rm -f "$dir/watcher.pid"
                exit "$rc"
            fi
        fi
        sleep "$interval" &
        sp=$!
        wait "$sp"
        sp=""
    done
}

# --- status ----------------------------------------------------------------------------------------
cmd_status() {  # DIR
    [ $# -eq 1 ] || exit 64
    dir=$1
    d_deploy=nginx d_project=none
    [ -f "$dir/deploy" ] && read -r d_deploy d_project < "$dir/deploy"
    set -- "$dir" "$d_deploy" "$d_project"
    if [ -f "$dir/state.json" ]; then echo "state_file=present"; else echo "state_file=absent"; fi
    running=no
    case $2 in
        nginx)
            pid=$(read_pid "$dir/nginx.pid")
            if [ -n "$pid" ] && ours "$pid" "$dir"; then running=yes; echo "pid=$pid"; fi ;;
        compose|compose-v1)
            if [ -f "$dir/docker-compose.yml" ] && [ -n "$(compose "$dir" "$2" "$3" ps -q stub 2>/dev/null)" ]; then
                running=yes
            fi ;;
    esac
    echo "running=$running"
    w=$(read_pid "$dir/watcher.pid")
    if [ -n "$w" ] && ours "$w" "$dir"; then echo "watcher=$w"; fi
    [ -f "$dir/restore-failed" ] && echo "restore_failed=$(cat "$dir/restore-failed")"
    [ -f "$dir/access.log" ] && echo "requests=$(grep -v -c '"glcleanup-verify' "$dir/access.log")"
    [ -f "$dir/deletes.log" ] && echo "deletes=$(wc -l < "$dir/deletes.log" | tr -d ' ')"
    [ -f "$dir/deletes.log" ] && echo "last_delete=$(tail -n 1 "$dir/deletes.log")"
    [ -f "$dir/confirmed" ] && sed 's/^/confirmed_/' "$dir/confirmed"
    [ -f "$dir/last-off" ] && sed 's/^/last_off_/' "$dir/last-off"
    if [ -f "$dir/state.json" ]; then echo "---state---"; cat "$dir/state.json"
    elif [ -f "$dir/last-state.json" ]; then echo "---last-state---"; cat "$dir/last-state.json"; fi
    exit 0
}

cmd_listeners() {
    if command -v ss >/dev/null 2>&1; then ss -Hltn; exit 0; fi
    if command -v netstat >/dev/null 2>&1; then netstat -ltn; exit 0; fi
    echo "stubctl: neither ss nor netstat found" >&2
    exit 72
}

[ $# -ge 1 ] || exit 64
sub=$1; shift
case $sub in
    check) cmd_check "$@" ;;
    start) cmd_start "$@" ;;
    confirm) cmd_confirm "$@" ;;
    restore) cmd_restore "$@" ;;
    watch) cmd_watch "$@" ;;
    status) cmd_status "$@" ;;
    listeners) cmd_listeners ;;
    *) exit 64 ;;
esac
