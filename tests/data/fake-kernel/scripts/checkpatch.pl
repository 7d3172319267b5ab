#!/usr/bin/perl
use strict; use warnings;
my ($err, $warn, $lines) = (0, 0, 0);
open(my $fh, '<', $ARGV[-1]) or die "cannot open $ARGV[-1]";
while (my $l = <$fh>) {
    next unless $l =~ /^\+/ && $l !~ /^\+\+\+/;
    $lines++;
    if ($l =~ /[ \t]+\n$/) { print "ERROR:TRAILING_WHITESPACE: trailing whitespace\n"; $err++; }
    if (length($l) > 102) { print "WARNING:LONG_LINE: line length exceeds 100 columns\n"; $warn++; }
}
print "total: $err errors, $warn warnings, $lines lines checked\n";
