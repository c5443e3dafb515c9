# Sourced by run.sh and scripts/soak-datapath with `here` set to this directory: creates or
# reuses the clients' venv ($SWITCHYARD_VENV, default ~/.cache/switchyard-venv) and installs the
# pinned requirements only when they changed. Leaves its path in `venv`.
venv="${SWITCHYARD_VENV:-$HOME/.cache/switchyard-venv}"
requirements="$here/requirements.txt"

if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    echo "creating venv $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi

# Reinstall only when requirements.txt changed since the last successful install.
stamp="$venv/.switchyard-clients-requirements.sha256"
want="$("$venv/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$requirements")"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "installing $requirements into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    printf '%s\n' "$want" >"$stamp"
fi

