"""olddefconfig for the fake tree: drop options whose dependencies are unmet."""
import re
import sys

kconfig, dotconfig = sys.argv[1], sys.argv[2]
symbols, deps, ifs, cur = [], {}, [], None
for line in open(kconfig):
    s = line.strip()
    if s.startswith("if "):
        ifs.append(s[3:])
    elif s == "endif":
        ifs.pop()
    elif s.startswith("config "):
        cur = s.split()[1]
        symbols.append(cur)
        deps[cur] = list(ifs)
    elif s.startswith("depends on ") and cur:
        deps[cur] += [d.strip() for d in s[len("depends on "):].split("&&")]
values = {}
for line in open(dotconfig):
    m = re.match(r"CONFIG_(\w+)=(\S+)", line)
    if m:
        values[m.group(1)] = m.group(2)
changed = True
while changed:
    changed = False
    for sym in symbols:
        v = values.get(sym, "n")
        if v == "m" and values.get("MODULES") != "y":
            values[sym], changed = "y", True
        if v != "n" and any(values.get(d, "n") == "n" for d in deps[sym]):
            values[sym], changed = "n", True
with open(dotconfig, "w") as out:
    for sym in symbols:
        v = values.get(sym, "n")
        out.write(f"CONFIG_{sym}={v}\n" if v != "n" else f"# CONFIG_{sym} is not set\n")
