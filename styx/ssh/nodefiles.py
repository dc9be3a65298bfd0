"""Where a job's files go on a node, beyond plain SFTP copies.

- ``point_sky_workdir(conn, target)``: make ``~/sky_workdir`` (SkyPilot's workdir path) a
  symlink to ``target`` (a job's own ``~/styx_workdir/<job_id>``), swapped in atomically.
  Jobs of one cluster run at once, each in its own copy; the path names the copy synced
  last, as SkyPilot's rsync into one directory does (last writer wins) — but a running job
  keeps its own files. A real directory found there (not Styx's) is renamed aside, never
  deleted.
- ``git_clone(conn, url, ref, target)``: clone a repository on the node into ``target`` at
  ``ref`` (a branch, tag or commit); ``GitMissing`` if the node has no git,
  ``GitCloneFailed`` with git's words if the clone fails.
- ``link_absolute_mount(conn, dst, wrapped)``: put a symlink at the absolute path ``dst``
  to ``~/<wrapped>``, where the files were copied (as SkyPilot does: the files live in the
  login user's home, the path outside it is a link), creating ``dst``'s parent with
  ``sudo -n`` when the login user may not; ``MountRefused`` when that cannot be done.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

import asyncssh

from styx.ssh.connection import RemoteCommandFailed, SshError, run, run_checked

__all__ = [
    "FILE_MOUNTS_ROOT",
    "GitCloneFailed",
    "GitMissing",
    "MountRefused",
    "git_clone",
    "link_absolute_mount",
    "point_sky_workdir",
]

#: Where the files of a mount to an absolute path are copied, under the login home.
FILE_MOUNTS_ROOT = ".styx/file_mounts"
#: How long a clone may take.
GIT_CLONE_TIMEOUT = 25 * 60.0
#: How much of git's own message an error carries.
_MESSAGE_CHARS = 600


class GitMissing(SshError):
    """The node has no ``git``."""


class GitCloneFailed(SshError):
    """``git clone`` or the checkout of the ref failed; the message is git's."""


class MountRefused(SshError):
    """An absolute mount destination cannot be made on this node; the message says why."""


def _home_word(path: str) -> str:
    """A path relative to the home as a shell word anchored at ``$HOME``."""
    return '"$HOME"/' + shlex.quote(path.lstrip("/"))


async def point_sky_workdir(conn: asyncssh.SSHClientConnection, target: str, link: str = "sky_workdir") -> None:
    """``~/<link>`` -> ``<target>`` (relative to the home), replaced atomically."""
    t, name = shlex.quote(target), shlex.quote(link)
    await run_checked(conn, f"""
cd "$HOME" || exit 90
tmp=.{link}.styx-$$
ln -sfn {t} "$tmp" || exit 91
if [ -e {name} ] && [ ! -L {name} ]; then mv {name} "{link}.replaced-$(date +%s)-$$" || exit 92; fi
mv -Tf "$tmp" {name} 2>/dev/null || {{ rm -f {name} && mv -f "$tmp" {name}; }}
""", "point_sky_workdir")


async def git_clone(conn: asyncssh.SSHClientConnection, url: str, ref: str | None, target: str,
                    *, env: Mapping[str, str] | None = None) -> None:
    """Clone ``url`` at ``ref`` into ``~/<target>`` (replacing what was there), with ``env``
    exported first. The url and ref were validated not to start with ``-``, and are passed
    after ``--`` or as option values anyway."""
    u, tgt = shlex.quote(url), _home_word(target)
    checkout = ""
    if ref:
        r = shlex.quote(ref)
        # A branch or tag: clone it directly. Else (a commit): clone, then check it out.
        checkout = f"""
if ! git clone --quiet --branch {r} -- {u} "$t" 2>"$err"; then
  rm -rf "$t"
  git clone --quiet -- {u} "$t" 2>"$err" || fail
  git -C "$t" checkout --quiet --detach {r} 2>"$err" || fail
fi"""
    else:
        checkout = f"""
git clone --quiet -- {u} "$t" 2>"$err" || fail"""
    code, out, stderr = await run(conn, f"""
command -v git >/dev/null 2>&1 || {{ echo NOGIT; exit 0; }}
export GIT_TERMINAL_PROMPT=0
dst={tgt}
mkdir -p "$(dirname "$dst")" || exit 90
t="$dst.styx-clone-$$"; err="$t.err"
fail() {{ tail -c {_MESSAGE_CHARS} "$err" >&2; rm -rf "$t" "$err"; exit 3; }}
rm -rf "$t"{checkout}
rm -f "$err"
old="$dst.styx-old-$$"
if [ -e "$dst" ] || [ -L "$dst" ]; then mv "$dst" "$old" || exit 91; fi
mv "$t" "$dst" || exit 92
rm -rf "$old"
echo CLONED
""", env=env, timeout=GIT_CLONE_TIMEOUT)
    words = out.decode(errors="replace").split()
    if words[:1] == ["NOGIT"]:
        raise GitMissing("git is not installed on the node")
    if code == 3:
        text = stderr.decode(errors="replace").strip().replace("\n", "; ")
        raise GitCloneFailed(f"git could not clone {url}" + (f" at {ref}" if ref else "") + f": {text}")
    if code != 0 or words[-1:] != ["CLONED"]:
        raise RemoteCommandFailed(f"git_clone exited {code}: {stderr.decode(errors='replace')[-_MESSAGE_CHARS:]}")


async def link_absolute_mount(conn: asyncssh.SSHClientConnection, dst: str, wrapped: str) -> None:
    """A symlink at the absolute ``dst`` to ``~/<wrapped>``; see the module docstring."""
    d, src = shlex.quote(dst), _home_word(wrapped)
    code, out, stderr = await run(conn, f"""
dst={d}; src={src}
if [ -e "$dst" ] && [ ! -L "$dst" ]; then echo EXISTS; exit 0; fi
parent=$(dirname -- "$dst")
s=
if ! {{ mkdir -p -- "$parent" 2>/dev/null && [ -w "$parent" ]; }}; then
  if ! sudo -n true 2>/dev/null; then echo NOSUDO; exit 0; fi
  s="sudo -n"
  $s mkdir -p -- "$parent" || {{ echo FAILED; exit 0; }}
fi
$s ln -sfn -- "$src" "$dst" || {{ echo FAILED; exit 0; }}
echo LINKED
""", timeout=60)
    word = (out.decode(errors="replace").split() or [""])[-1]
    if word == "LINKED":
        return
    if word == "EXISTS":
        raise MountRefused(f"{dst} already exists on the node and is not a Styx mount; remove it or mount "
                           "elsewhere")
    if word == "NOSUDO":
        raise MountRefused(f"the login user may not write to {dst}'s directory and has no passwordless "
                           "sudo to create it; mount under ~ instead")
    raise MountRefused(f"could not link {dst} to the copied files "
                       f"(exit {code}: {stderr.decode(errors='replace')[-_MESSAGE_CHARS:].strip()})")
