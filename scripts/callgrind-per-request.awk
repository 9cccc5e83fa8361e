# Per-function instruction counts of one callgrind dump, divided by the requests it covers.
# Used by scripts/bench --profile: awk -v mode=self|inclusive -v requests=N -f this callgrind.out.1
# (callgrind_annotate attributes a mid-run dump of this binary to one function). "inclusive" is
# self plus what the function's calls cost (recursion counted once per level).
function name_of(spec,   id) {
    id = spec; sub(/\).*/, "", id); sub(/^\(/, "", id)
    if (spec ~ /\) /) { sub(/^\([0-9]+\) /, "", spec); names[id] = spec }
    return id
}
/^fn=/ { cur = name_of(substr($0, 4)); in_call = 0; next }
/^cfn=/ { callee = name_of(substr($0, 5)); next }
/^calls=/ { in_call = 1; next }
/^[0-9+*-]/ {
    if (NF < 2) next
    if (in_call) { in_call = 0; if (callee != cur) called[cur] += $2 }
    else self[cur] += $2
}
END {
    for (f in self) total[f] = self[f]
    if (mode == "inclusive") for (f in called) total[f] += called[f]
    for (f in total) if (total[f] / requests >= 50) printf "%9.0f  %s\n", total[f] / requests, names[f]
}
