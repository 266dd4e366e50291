#!/usr/bin/perl
# Process accounting from /proc for perf/bench.sh.
#   procstat.pl cpu PID...            CPU seconds (utime+stime+cutime+cstime) of each PID's process tree, summed:
#                                     live descendants counted directly, exited ones through their parent's c*time.
#   procstat.pl hwm PID               VmHWM (peak RSS) of one process, kB.
#   procstat.pl rss PID...            VmRSS summed over the PIDs' trees, kB.
#   procstat.pl pss PID...            Pss (proportional set size: shared pages split between sharers) summed over
#                                     the PIDs' trees, kB — the honest total for a many-process server like Postfix.
#   procstat.pl ctxsw PID             context switches (voluntary + involuntary) of each live thread of one process, one
#                                     "TID COUNT" line per thread (/proc/PID/task/*/status): a snapshot for ctxsw-since.
#   procstat.pl ctxsw-since PID FILE  switches since the snapshot FILE: per live thread, its count minus its count in
#                                     FILE (0 for a thread born since), summed. A thread that exited in between is left
#                                     out (its switches since the snapshot are lost), so the result is a lower bound.
#                                     Nothing is printed when the process is gone.
#   procstat.pl sample OUT SECS PID...  every SECS: sum Pss over the trees; keep the peak; rewrite OUT with
#                                     "peak_kB current_kB"; runs until killed or every PID is gone.
use strict;
use warnings;
use POSIX ();
use Time::HiRes qw(sleep);

my $tck = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

sub stat_of {
    my ($pid) = @_;
    open(my $f, '<', "/proc/$pid/stat") or return;
    my $s = <$f>;
    close($f);
    return unless defined $s;
    $s =~ s/^.*\)\s+//s;              # past "pid (comm) "
    my @f = split /\s+/, $s;          # $f[0] is field 3 (state)
    return { ppid => $f[1], cpu => $f[11] + $f[12] + $f[13] + $f[14] };
}

sub tree {
    my @roots = @_;
    my %children;
    opendir(my $d, '/proc') or die;
    for my $p (grep { /^\d+$/ } readdir $d) {
        my $st = stat_of($p) or next;
        push @{ $children{ $st->{ppid} } }, $p;
    }
    closedir $d;
    my %seen;
    my @todo = grep { -d "/proc/$_" } @roots;
    while (@todo) {
        my $p = shift @todo;
        next if $seen{$p}++;
        push @todo, @{ $children{$p} || [] };
    }
    return keys %seen;
}

sub pss_kb {
    my ($pid) = @_;
    open(my $f, '<', "/proc/$pid/smaps_rollup") or return 0;
    while (<$f>) { return $1 if /^Pss:\s+(\d+)/ }
    return 0;
}

sub status_kb {
    my ($pid, $key) = @_;
    open(my $f, '<', "/proc/$pid/status") or return 0;
    while (<$f>) { return $1 if /^\Q$key\E:\s+(\d+)/ }
    return 0;
}

my $cmd = shift @ARGV // '';
if ($cmd eq 'cpu') {
    my $t = 0;
    for my $p (tree(@ARGV)) { my $st = stat_of($p) or next; $t += $st->{cpu} }
    printf "%.2f\n", $t / $tck;
} elsif ($cmd eq 'ctxsw' || $cmd eq 'ctxsw-since') {
    my ($pid, $since) = @ARGV;
    my %before;
    if ($cmd eq 'ctxsw-since') {
        open(my $f, '<', $since) or die "procstat.pl: $since: $!\n";
        while (<$f>) { $before{$1} = $2 if /^(\d+) (\d+)$/ }
        close($f);
    }
    my ($sum, $seen) = (0, 0);
    for my $status (glob("/proc/$pid/task/*/status")) {
        my ($task) = $status =~ m{/task/(\d+)/};
        open(my $f, '<', $status) or next;  # the thread exited since the glob
        my $n = 0;
        while (<$f>) { $n += $1 if /^(?:non)?voluntary_ctxt_switches:\s+(\d+)/ }
        close($f);
        $seen++;
        if ($cmd eq 'ctxsw') { print "$task $n\n" } else { $sum += $n - ($before{$task} // 0) }
    }
    # A process that is gone has no count: print nothing, which bench.sh reports as null, not as 0.
    print "$sum\n" if $cmd eq 'ctxsw-since' && $seen;
} elsif ($cmd eq 'hwm') {
    print status_kb($ARGV[0], 'VmHWM'), "\n";
} elsif ($cmd eq 'rss') {
    my $kb = 0;
    $kb += status_kb($_, 'VmRSS') for tree(@ARGV);
    print "$kb\n";
} elsif ($cmd eq 'pss') {
    my $kb = 0;
    $kb += pss_kb($_) for tree(@ARGV);
    print "$kb\n";
} elsif ($cmd eq 'sample') {
    my ($out, $secs, @pids) = @ARGV;
    my $peak = 0;
    $SIG{TERM} = sub { exit 0 };
    while (grep { -d "/proc/$_" } @pids) {
        my $kb = 0;
        $kb += pss_kb($_) for tree(@pids);
        $peak = $kb if $kb > $peak;
        open(my $f, '>', "$out.tmp") or die;
        print $f "$peak $kb\n";
        close($f);
        rename("$out.tmp", $out);
        sleep($secs);
    }
} else {
    die "usage: procstat.pl cpu|ctxsw|ctxsw-since|hwm|rss|pss|sample ...\n";
}
