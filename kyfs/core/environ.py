"""Environment variable names that change how a program is loaded or what a shell or
interpreter runs before the program's own code: ``kyfs exec`` does not export keys with
these names unless the user names each with ``--allow-env NAME`` (no I/O here).

A workspace is data; an agent or a teammate who may write a key should not thereby
choose the code another user's ``kyfs exec -- CMD`` runs. The list lowers that risk; it
is no sandbox: a program may read any other variable in a way that runs code. It joins
glibc's variables dropped for setuid programs (sysdeps/generic/unsecvars.h), sudo's
``initial_badenv_table`` (plugins/sudoers/env.c) and the tools' own start-up hooks
(Python, Node.js, Perl, Ruby, Java, git, ssh, make, editors and pagers).
"""

from __future__ import annotations

import fnmatch
import re

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a shell variable name (POSIX 3.235)

DANGEROUS = (
    # the dynamic loader and libc (glibc unsecvars.h)
    "LD_*", "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN",
    "LOCPATH", "MALLOC_*", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS",
    "TMPDIR", "TZDIR", "DYLD_*", "LIBPATH", "SHLIB_PATH", "_RLD*", "LDR_*",
    # what runs: the search path and the shells' start-up and hooks (sudo's table)
    "PATH", "CDPATH", "IFS", "ENV", "BASH_ENV", "BASH_FUNC_*", "BASHOPTS", "SHELLOPTS",
    "PS4", "PROMPT_COMMAND", "GLOBIGNORE", "FPATH", "NULLCMD", "READNULLCMD", "ZDOTDIR",
    "TMPPREFIX", "TERMINFO", "TERMINFO_DIRS", "TERMPATH", "TERMCAP", "KRB5_CONFIG*",
    "KRB5_KTNAME",
    # interpreters' start-up hooks
    "PYTHON*", "PERL5*", "PERLLIB", "PERLIO_DEBUG", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS",
    "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    # programs that run a command a variable names, or read their configuration (and
    # the commands in it) from where a variable points
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_CONFIG*", "GIT_ASKPASS",
    "GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR",
    "GIT_PROXY_COMMAND", "GIT_DIR", "GIT_TEMPLATE_DIR", "SSH_ASKPASS", "SUDO_ASKPASS",
    "LESSOPEN", "LESSCLOSE", "PAGER", "MANPAGER", "EDITOR", "VISUAL", "BROWSER",
    "MAKEFILES", "MAKEFLAGS", "MFLAGS", "CC", "CXX", "CPP", "LD", "HOME",
    "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "npm_config_*", "NPM_CONFIG_*",
    # where network traffic goes
    "*_PROXY", "*_proxy",
)  # fmt: skip


def is_dangerous(name: str) -> bool:
    """True when variable ``name`` matches one of DANGEROUS (shell-style patterns,
    case-sensitive as the environment is)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in DANGEROUS)
