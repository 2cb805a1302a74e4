# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bgfctl_global_optspecs
    string join \n cluster= token-file= json h/help V/version
end

function __fish_bgfctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bgfctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bgfctl_using_subcommand
    set -l cmd (__fish_bgfctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bgfctl -n "__fish_bgfctl_needs_command" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_needs_command" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_needs_command" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -s V -l version -d 'Print version'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "status" -d 'One table for the cluster: roles, service addresses, sessions, log lag, heartbeats, and the protection state (exit 2 unless "N+1 protected")'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "sessions" -d 'Live sessions'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "log" -d 'State logs'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "drill" -d 'Failover drills (lab and test deployments: the target needs `[admin] drills = true`; `--mode cut` the cluster file\'s cut/heal commands): calls with bgf-callgen, a fault, the standby\'s takeover, and a report (timeline, phases, per-call media gaps, calls lost) with a JSON file and plots'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "switchover" -d 'Planned move of an active\'s calls to the standby (maintenance): the standby takes over at once, the old active steps down (exits 3); calls keep going. Leaves the cluster without a standby'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "completions" -d 'Print a shell completion script (e.g. `bgfctl completions bash > /etc/bash_completion.d/bgfctl`)'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "man" -d 'Print the man page (roff; `bgfctl man | man -l -`)'
complete -c bgfctl -n "__fish_bgfctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand status" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand status" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand status" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -f -a "list" -d 'Sessions of every instance that serves calls (or of one)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -f -a "show" -d 'One session by Call-ID, with its pinholes and their counters'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and not __fish_seen_subcommand_from list show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l instance -d 'Only this instance (or the standby serving it)' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l call-id -d 'Only this Call-ID' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l state -d 'Only sessions in this state' -r -f -a "early\t''
confirmed\t''
terminating\t''"
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l origin -d 'Only sessions set up from this side' -r -f -a "access\t''
core\t''"
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l limit -d 'At most this many sessions per instance' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from show" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from show" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from show" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "list" -d 'Sessions of every instance that serves calls (or of one)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "show" -d 'One session by Call-ID, with its pinholes and their counters'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and not __fish_seen_subcommand_from inspect help" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and not __fish_seen_subcommand_from inspect help" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and not __fish_seen_subcommand_from inspect help" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and not __fish_seen_subcommand_from inspect help" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and not __fish_seen_subcommand_from inspect help" -f -a "inspect" -d 'Records, sizes and the last compaction of an instance\'s state log (read from the store by the instance itself, or by the standby protecting it when the instance does not answer)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and not __fish_seen_subcommand_from inspect help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and __fish_seen_subcommand_from inspect" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and __fish_seen_subcommand_from inspect" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and __fish_seen_subcommand_from inspect" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Records, sizes and the last compaction of an instance\'s state log (read from the store by the instance itself, or by the standby protecting it when the instance does not answer)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand log; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and not __fish_seen_subcommand_from failover help" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and not __fish_seen_subcommand_from failover help" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and not __fish_seen_subcommand_from failover help" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and not __fish_seen_subcommand_from failover help" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and not __fish_seen_subcommand_from failover help" -f -a "failover" -d 'Fail an active under calls and report how the standby carried them'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and not __fish_seen_subcommand_from failover help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l mode -d 'kill: SIGKILL (a crash); stop: SIGSTOP for --fault-ms (a frozen VM); cut: the cluster file\'s cut command, heal after --fault-ms' -r -f -a "kill\t''
stop\t''
cut\t''"
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l calls -d 'Calls through each active carrying traffic' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l rate -d 'Calls/s per active' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l fault-ms -d 'How long a stop or cut lasts (ms)' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l before-s -d 'Media seconds before the fault, once every call is up' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l after-s -d 'Media seconds through the standby before the calls\' in-dialog check' -r
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l report-dir -d 'Where the run\'s directory goes (default: the cluster file\'s [drill] report_dir, else the current directory)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l others -d 'Also place calls through every other active (they must not notice)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from failover" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from help" -f -a "failover" -d 'Fail an active under calls and report how the standby carried them'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand drill; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand switchover" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand switchover" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand switchover" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand switchover" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand completions" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand completions" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand completions" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand man" -l cluster -d 'Cluster file: the bgf processes and their admin URLs (TOML; see docs/OPERATIONS.md)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand man" -l token-file -d 'File holding the admin bearer token (overrides the cluster file\'s)' -r -F
complete -c bgfctl -n "__fish_bgfctl_using_subcommand man" -l json -d 'Print JSON instead of tables'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand man" -s h -l help -d 'Print help'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "status" -d 'One table for the cluster: roles, service addresses, sessions, log lag, heartbeats, and the protection state (exit 2 unless "N+1 protected")'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "sessions" -d 'Live sessions'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "log" -d 'State logs'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "drill" -d 'Failover drills (lab and test deployments: the target needs `[admin] drills = true`; `--mode cut` the cluster file\'s cut/heal commands): calls with bgf-callgen, a fault, the standby\'s takeover, and a report (timeline, phases, per-call media gaps, calls lost) with a JSON file and plots'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "switchover" -d 'Planned move of an active\'s calls to the standby (maintenance): the standby takes over at once, the old active steps down (exits 3); calls keep going. Leaves the cluster without a standby'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "completions" -d 'Print a shell completion script (e.g. `bgfctl completions bash > /etc/bash_completion.d/bgfctl`)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "man" -d 'Print the man page (roff; `bgfctl man | man -l -`)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions log drill switchover completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "list" -d 'Sessions of every instance that serves calls (or of one)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "show" -d 'One session by Call-ID, with its pinholes and their counters'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and __fish_seen_subcommand_from log" -f -a "inspect" -d 'Records, sizes and the last compaction of an instance\'s state log (read from the store by the instance itself, or by the standby protecting it when the instance does not answer)'
complete -c bgfctl -n "__fish_bgfctl_using_subcommand help; and __fish_seen_subcommand_from drill" -f -a "failover" -d 'Fail an active under calls and report how the standby carried them'
