# kyfs: `make mount` and `make test` work on a fresh machine (Debian, Python >= 3.11).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MOUNTPOINT ?= $(HOME)/kyfs
# Where `make mount` links the kyfs command: /usr/local/bin for root, ~/.local/bin otherwise.
BINDIR ?= $(if $(filter 0,$(shell id -u)),/usr/local/bin,$(HOME)/.local/bin)
PYTEST_ARGS ?=

.PHONY: help system-deps venv mount unmount test faults lint typecheck check bench bench-quick docs clean

help:
	@echo "make mount    install what is missing, mount kyfs at $(MOUNTPOINT) in the background"
	@echo "make unmount  unmount it"
	@echo "make test     install what is missing, run the whole test suite"
	@echo "make check    lint + typecheck + test"
	@echo "make faults   the fault campaigns at full size (issue 25: 30 kills, 200 corruptions)"

# fusermount3 and libfuse3 come from Debian's fuse3 package; the tests also drive the
# mount with rsync, tar, git (Debian packages of the same names), getfattr and setfattr
# (attr), getfacl and setfacl (acl); make an XFS file system in a loop device with mkfs.xfs
# (xfsprogs: forks as reflinks, tests/test_fork_reflink.py); and
# start a throwaway PostgreSQL server of their own (Debian's postgresql: initdb and pg_ctl,
# which live in /usr/lib/postgresql/<version>/bin). Installing it makes no cluster and starts no server
# (create_main_cluster = false): the tests make their own.
SYSTEM_TOOLS := fusermount3:fuse3 rsync:rsync tar:tar git:git getfattr:attr setfacl:acl mkfs.xfs:xfsprogs
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing with apt-get"; \
	    mkdir -p /etc/postgresql-common; \
	    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
	      || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing (sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

mount: system-deps venv
	@mkdir -p $(BINDIR) && for c in kyfs kys kyg kyl kyd kyv kye kyi; do ln -sf $(CURDIR)/$(BIN)/$$c $(BINDIR)/$$c; done
	$(BIN)/kyfs mount $(MOUNTPOINT)
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "note: add $(BINDIR) to PATH to run kyfs";; esac

unmount: venv
	$(BIN)/kyfs unmount $(MOUNTPOINT)

test: system-deps venv
	$(BIN)/pytest $(PYTEST_ARGS)

# `make test` (CI) runs the kill, crash and corruption campaigns smaller (10 kills per
# command, 10 daemon kills, 60 corrupted copies, a 256 MiB file, Node.js on 2,000 files
# with PostgreSQL); this runs them at the size of the issues that asked for them: about
# 13 minutes on 2 cores.
FAULTS := tests/test_kills.py tests/test_corruption.py tests/test_crash.py \
  tests/test_snapshot_faults.py tests/test_fork.py::test_a_killed_fork_is_finished_or_undone \
  tests/test_filesystem.py::test_kill_9_then_mount_at_once_recovers_every_time \
  tests/test_posix.py::test_a_big_file_in_bounded_memory \
  tests/mount/test_inodes.py::test_node_tells_many_files_apart
faults: system-deps venv
	KYFS_KILLS=30 KYFS_CORRUPTION_RUNS=200 KYFS_CRASH_ROUNDS=20 KYFS_BIG_FILE_MIB=1024 \
	  KYFS_NODE_FILES=10000 $(BIN)/pytest -ra --durations=0 $(FAULTS) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check kyfs tests bench
	$(BIN)/ruff format --check kyfs tests bench

typecheck: venv
	$(BIN)/mypy

check: lint typecheck test

bench: system-deps venv
	$(BIN)/python -m bench

bench-quick: system-deps venv
	$(BIN)/python -m bench --quick

# docs/cli.md and systemd/kyfs.service are generated from the code; tests check they are current.
docs: venv
	$(BIN)/python -c "from kyfs.cli import cli_reference; print(cli_reference(), end='')" > docs/cli.md
	$(BIN)/python -c "from kyfs.engine.sqlite.trust import write_reference; write_reference('kyfs/engine/sqlite/reference.py')"
	$(BIN)/python -c "from kyfs.platform.service import render_unit; print(render_unit('/usr/local/bin/kyfs', '%h/kyfs'), end='')" > systemd/kyfs.service

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
