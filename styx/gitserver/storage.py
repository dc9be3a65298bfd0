"""Repositories on disk, at ``<root>/<owner>/<name>.git``: create, delete, read, branch.

Only a :class:`~styx.gitserver.names.RepoName` gets here, never a raw path. Writes go
through the ``git`` binary when there is one (its ref locking is what concurrent pushes
use), through dulwich otherwise; reads (refs, a file at a commit, changed paths) use
dulwich. Every ``git`` command runs without a shell, with a scrubbed environment, and
with ``--end-of-options`` before anything that came from a user.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from dulwich.objects import Blob, Commit, Tag, Tree
from dulwich.repo import Repo as DulwichRepo

from styx.gitserver.names import ZERO_SHA, InvalidRef, RepoName, branch_ref, is_sha

__all__ = ["GitError", "RepoMissing", "RepoStore", "RefConflict", "git_config_args"]


class GitError(RuntimeError):
    """A git operation failed; the message is git's own."""


class RepoMissing(LookupError):
    """The repository's directory is not there."""


class RefConflict(GitError):
    """A ref was not where the caller expected (exists already, moved, or is missing)."""


def git_config_args(max_push_bytes: int, hooks_dir: Path | None = None) -> list[str]:
    """``-c`` options for every server-side git command: checks that do not depend on the
    repository's own config (a repo created elsewhere and copied in gets them too)."""
    args = [
        "-c", "receive.fsckObjects=true",
        "-c", "transfer.fsckObjects=true",
        "-c", f"receive.maxInputSize={max_push_bytes}",
        "-c", "receive.advertisePushOptions=false",
        "-c", "uploadpack.allowFilter=true",
        "-c", "gc.autoDetach=false",
        "-c", "core.logAllRefUpdates=false",
    ]
    if hooks_dir is not None:
        args += ["-c", f"core.hooksPath={hooks_dir}"]
    return args


class RepoStore:
    def __init__(self, root: Path, *, git: str | None, max_push_bytes: int = 2048 << 20,
                 git_home: Path | None = None) -> None:
        self.root = root
        self.git = git
        self.max_push_bytes = max_push_bytes
        self.git_home = git_home or root.parent / "gitserver" / "home"

    # ------------------------------------------------------------------ paths and env

    def path(self, name: RepoName) -> Path:
        return name.path_under(self.root)

    def exists(self, name: RepoName) -> bool:
        return (self.path(name) / "HEAD").is_file()

    def git_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What a git child process sees: nothing of ours but PATH, and no user config."""
        self.git_home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.git_home),
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
        }
        if extra:
            env.update(extra)
        return env

    def git_argv(self, *args: str, hooks_dir: Path | None = None) -> list[str]:
        if self.git is None:
            raise GitError("no git executable")
        return [self.git, *git_config_args(self.max_push_bytes, hooks_dir), *args]

    def _run(self, name: RepoName, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(self.git_argv("--git-dir", str(self.path(name)), *args), input=input,
                              capture_output=True, env=self.git_env(), timeout=300)
        if proc.returncode != 0:
            raise GitError(proc.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
        return proc.stdout

    # ------------------------------------------------------------------ lifecycle

    def create(self, name: RepoName, default_branch: str = "main") -> Path:
        """``git init --bare`` with Styx's config; raises FileExistsError if it is there."""
        head = branch_ref(default_branch)
        path = self.path(name)
        if path.exists():
            raise FileExistsError(f"{path} exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.git is not None:
            subprocess.run([self.git, "init", "--quiet", "--bare", "--template=", f"--initial-branch={default_branch}",
                            "--", str(path)], check=True, capture_output=True, env=self.git_env(), timeout=60)
        else:
            DulwichRepo.init_bare(str(path), mkdir=True).close()
            (path / "HEAD").write_text(f"ref: {head}\n")
        with DulwichRepo(str(path)) as repo:
            config = repo.get_config()
            for section, key, value in (
                (b"receive", b"fsckObjects", b"true"), (b"transfer", b"fsckObjects", b"true"),
                (b"receive", b"maxInputSize", str(self.max_push_bytes).encode()),
                (b"receive", b"denyDeletes", b"false"), (b"uploadpack", b"allowFilter", b"true"),
                (b"core", b"logAllRefUpdates", b"false"),
            ):
                config.set((section,), key, value)
            config.write_to_path()
        return path

    def delete(self, name: RepoName) -> bool:
        """Move the repository aside, then remove it (a reader never sees half a repo)."""
        path = self.path(name)
        if not path.exists():
            return False
        trash = self.root / ".trash"
        trash.mkdir(parents=True, exist_ok=True)
        target = trash / uuid.uuid4().hex
        os.replace(path, target)
        shutil.rmtree(target, ignore_errors=True)
        return True

    def _open(self, name: RepoName) -> DulwichRepo:
        if not self.exists(name):
            raise RepoMissing(f"repository {name} is missing on disk")
        return DulwichRepo(str(self.path(name)))

    # ------------------------------------------------------------------ reads (dulwich)

    def refs(self, name: RepoName, prefix: str = "refs/") -> dict[str, str]:
        """``{full ref: sha}`` of the refs under ``prefix`` (symbolic refs resolved)."""
        with self._open(name) as repo:
            out = {}
            for ref, sha in repo.refs.as_dict(prefix.rstrip("/").encode()).items():
                out[f"{prefix.rstrip('/')}/{ref.decode()}"] = sha.decode()
            return out

    def branches(self, name: RepoName) -> dict[str, str]:
        return {ref[len("refs/heads/"):]: sha for ref, sha in self.refs(name, "refs/heads/").items()}

    def ref_sha(self, name: RepoName, ref: str) -> str | None:
        with self._open(name) as repo:
            try:
                return repo.refs[ref.encode()].decode()
            except KeyError:
                return None

    def ref_contains(self, name: RepoName, ref: str, sha: str) -> bool:
        """Whether ``ref`` points at commit ``sha`` or at a descendant of it."""
        from dulwich.graph import can_fast_forward

        with self._open(name) as repo:
            try:
                current = repo.refs[ref.encode()]
            except KeyError:
                return False
            if current.decode() == sha:
                return True
            try:
                return can_fast_forward(repo, sha.encode(), current)
            except (KeyError, AssertionError):  # the commit never arrived, or a tag
                return False

    def resolve(self, name: RepoName, rev: str) -> str | None:
        """A commit sha for ``rev``: a full sha, a branch, a tag, or a full ref; None if unknown."""
        if not isinstance(rev, str) or not rev or rev.startswith("-") or len(rev) > 255:
            return None
        with self._open(name) as repo:
            candidates = [rev] if is_sha(rev) else [f"refs/heads/{rev}", f"refs/tags/{rev}", rev]
            for cand in candidates:
                try:
                    obj = repo[cand.encode()] if is_sha(cand) else repo[repo.refs[cand.encode()]]
                except (KeyError, ValueError):
                    continue
                while isinstance(obj, Tag):
                    obj = repo[obj.object[1]]
                if isinstance(obj, Commit):
                    return obj.id.decode()
            return None

    def commit_message(self, name: RepoName, sha: str) -> str:
        with self._open(name) as repo:
            commit = repo[sha.encode()]
            if not isinstance(commit, Commit):
                raise KeyError(sha)
            return commit.message.decode(errors="replace")

    def _commit_tree(self, repo: DulwichRepo, sha: str) -> bytes:
        obj = repo[sha.encode()]
        while isinstance(obj, Tag):
            obj = repo[obj.object[1]]
        if not isinstance(obj, Commit):
            raise KeyError(f"{sha} is not a commit")
        return obj.tree

    def read_file(self, name: RepoName, sha: str, path: str) -> bytes | None:
        """The blob at ``path`` in commit ``sha``, or None if there is none."""
        from dulwich.object_store import tree_lookup_path

        with self._open(name) as repo:
            try:
                tree = self._commit_tree(repo, sha)
                _mode, blob_id = tree_lookup_path(repo.__getitem__, tree, path.encode())
            except KeyError:
                return None
            blob = repo[blob_id]
            return blob.data if isinstance(blob, Blob) else None

    def changed_paths(self, name: RepoName, before: str, after: str) -> list[str]:
        """Files that differ between two commits; every file of ``after`` when ``before`` is
        zero or unknown (a new branch)."""
        from dulwich.diff_tree import tree_changes

        with self._open(name) as repo:
            new_tree = self._commit_tree(repo, after)
            old_tree = None
            if before and before != ZERO_SHA:
                try:
                    old_tree = self._commit_tree(repo, before)
                except KeyError:
                    old_tree = None
            paths = set()
            for change in tree_changes(repo.object_store, old_tree, new_tree):
                for side in (change.old, change.new):
                    if side is not None and side.path is not None:
                        paths.add(side.path.decode(errors="replace"))
            return sorted(paths)

    # ------------------------------------------------------------------ writes

    def create_branch(self, name: RepoName, branch: str, sha: str) -> None:
        """Create ``branch`` at commit ``sha``; RefConflict if it exists."""
        ref = branch_ref(branch)
        if not is_sha(sha):
            raise InvalidRef(f"not a commit id: {sha!r}")
        if self.git is not None:
            try:
                self._run(name, "update-ref", "-m", "styx: create branch", "--end-of-options", ref, sha, ZERO_SHA)
            except GitError as err:
                raise RefConflict(f"branch {branch!r} could not be created: {err}") from None
            return
        with self._open(name) as repo:
            if not repo.refs.add_if_new(ref.encode(), sha.encode()):
                raise RefConflict(f"branch {branch!r} exists already")

    def delete_branch(self, name: RepoName, branch: str, expected_sha: str) -> None:
        """Delete ``branch`` if it still points at ``expected_sha``."""
        ref = branch_ref(branch)
        if self.git is not None:
            try:
                self._run(name, "update-ref", "-m", "styx: delete branch", "-d", "--end-of-options", ref, expected_sha)
            except GitError as err:
                raise RefConflict(f"branch {branch!r} could not be deleted: {err}") from None
            return
        with self._open(name) as repo:
            if not repo.refs.remove_if_equals(ref.encode(), expected_sha.encode()):
                raise RefConflict(f"branch {branch!r} moved or is gone")

    def set_head(self, name: RepoName, branch: str) -> None:
        """Point HEAD (what a clone checks out) at ``branch``."""
        ref = branch_ref(branch)
        if self.git is not None:
            self._run(name, "symbolic-ref", "--end-of-options", "HEAD", ref)
            return
        with self._open(name) as repo:
            repo.refs.set_symbolic_ref(b"HEAD", ref.encode())

    # ------------------------------------------------------------------ export

    def export_tree(self, name: RepoName, sha: str, dest: Path) -> Path:
        """Write the files of commit ``sha`` to ``dest`` (created; must not exist).

        ``git archive`` when there is git, dulwich otherwise; either way extracted with
        tarfile's ``data`` filter, so no member lands outside ``dest`` or keeps odd modes.
        """
        if not is_sha(sha):
            raise InvalidRef(f"not a commit id: {sha!r}")
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir(parents=True)
        try:
            if self.git is not None:
                data = self._run(name, "archive", "--format=tar", "--end-of-options", sha)
                stream: io.BufferedIOBase = io.BytesIO(data)
            else:
                stream = io.BytesIO(self._dulwich_tar(name, sha))
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                tar.extractall(tmp, filter="data")
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    def _dulwich_tar(self, name: RepoName, sha: str) -> bytes:
        out = io.BytesIO()
        with self._open(name) as repo, tarfile.open(fileobj=out, mode="w:") as tar:
            for path, mode, blob in _walk(repo, self._commit_tree(repo, sha), b""):
                info = tarfile.TarInfo(path.decode(errors="surrogateescape"))
                if mode == 0o120000:
                    info.type = tarfile.SYMTYPE
                    info.linkname = blob.data.decode(errors="surrogateescape")
                    tar.addfile(info)
                else:
                    info.size = len(blob.data)
                    info.mode = 0o755 if mode & 0o111 else 0o644
                    tar.addfile(info, io.BytesIO(blob.data))
        return out.getvalue()


def _walk(repo: DulwichRepo, tree_id: bytes, prefix: bytes) -> Iterator[tuple[bytes, int, Blob]]:
    tree = repo[tree_id]
    assert isinstance(tree, Tree)
    for entry in tree.iteritems():
        path = prefix + entry.path
        if entry.mode == 0o040000:
            yield from _walk(repo, entry.sha, path + b"/")
        elif entry.mode == 0o160000:  # a submodule: git archive leaves it out too
            continue
        else:
            yield path, entry.mode, repo[entry.sha]
