#!/bin/sh
# Runs libFuzzer targets one after the other: make fuzz, make fuzz-smoke.
#
#   sh tests/fuzz/run.sh BUILDDIR SECONDS TARGET...
#
# Each target starts from its seeds (tests/fuzz/corpus/TARGET, read only)
# and what earlier runs kept (BUILDDIR/corpus/TARGET, where new inputs go).
# A crash, leak, timeout or failed invariant leaves its input in
# BUILDDIR/crashes/ and the whole log in BUILDDIR/logs/TARGET.log; the
# run goes on with the other targets and fails at the end.  Known issues
# are let through unless RELAYQ_FUZZ_STRICT is set (tests/fuzz/README).
set -eu

B=$1
SECS=$2
shift 2

# Known leaks (README) are suppressed unless RELAYQ_FUZZ_STRICT is set.
if [ -z "${RELAYQ_FUZZ_STRICT:-}" ]; then
	LSAN_OPTIONS="suppressions=$(pwd)/tests/fuzz/known-leaks.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
	export LSAN_OPTIONS
fi

mkdir -p "$B/logs" "$B/crashes"
failed=""
for t in "$@"; do
	mkdir -p "$B/corpus/$t"
	log="$B/logs/$t.log"
	# -close_fd_mask=3: the code under test logs to stderr (and the
	# dialogue answers on stdout); libFuzzer and sanitizer reports
	# still get through.
	if "$B/fuzz/$t" -max_total_time="$SECS" -timeout=25 \
	    -rss_limit_mb=2048 -close_fd_mask=3 -print_final_stats=1 \
	    -artifact_prefix="$B/crashes/$t-" \
	    "$B/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
		cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
		printf '  FUZZ    %-18s ok  %s runs, %s exec/s, %s\n' "$t" \
		    "${runs:-?}" "${rate:-?}" "${cov:-cov: ?}"
	else
		printf '  FUZZ    %-18s FAILED (log: %s)\n' "$t" "$log"
		# The report, without libFuzzer's and libc's own frames.
		grep -E '^(==[0-9]+==|SUMMARY|relayq fuzz|.*runtime error|    #[0-9]+ |artifact_prefix)' \
		    "$log" | grep -vE 'in (fuzzer::|__sanitizer|__interceptor|abort|raise|__pthread|__libc|_start|main )| \(/lib' |
		    head -n 40 | sed 's/^/    /'
		failed="$failed $t"
	fi
done
if [ -n "$failed" ]; then
	echo "fuzzing found problems in:$failed (inputs in $B/crashes/)" >&2
	exit 1
fi
