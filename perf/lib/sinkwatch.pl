#!/usr/bin/perl
# Reads `smtp-sink -c` output on stdin ("sess=N quit=N mesg=N\r" after every session end, QUIT and ".") and keeps
# STATEFILE up to date with: messages-received  first-message-unix-time  last-message-unix-time
# (rewritten atomically at most every 50 ms while counts change, and once more at end of input).
use strict;
use warnings;
use Time::HiRes qw(time);
use IO::Select;

my ($state) = @ARGV or die "usage: sinkwatch.pl STATEFILE\n";
my ($n, $first, $last, $buf, $dirty, $written) = (0, 0, 0, '', 1, 0);

sub write_state {
    open(my $f, '>', "$state.tmp") or die "sinkwatch: $state.tmp: $!\n";
    printf $f "%d %.6f %.6f\n", $n, $first, $last;
    close($f);
    rename("$state.tmp", $state) or die "sinkwatch: rename: $!\n";
    ($dirty, $written) = (0, time);
}

my $sel = IO::Select->new(\*STDIN);
write_state();
while (1) {
    if ($sel->can_read(0.05)) {
        my $r = sysread(STDIN, my $chunk, 65536);
        last unless $r;
        $buf .= $chunk;
        # The last complete counter line in what we have.
        if ($buf =~ /.*mesg=(\d+)\r/s) {
            my $m = $1;
            if ($m > $n) {
                my $t = time;
                $first = $t if $n == 0;
                ($n, $last, $dirty) = ($m, $t, 1);
            }
        }
        $buf = substr($buf, -80);
    }
    write_state() if $dirty && time - $written >= 0.05;
}
write_state();
