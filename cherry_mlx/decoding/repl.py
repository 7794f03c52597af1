"""The interactive chat loop of ``cherry-mlx chat``: read a line, answer it streaming, repeat.

Commands: /reset (new conversation), /stats (tokens/s, acceptance), /quit. Ctrl-C stops an answer
(the session and its conversation go on); Ctrl-D, Ctrl-C at the prompt, or /quit leaves. No single
line ends the session: invalid UTF-8 is replaced with U+FFFD (with a notice), and a line that fails
is reported and dropped from the conversation.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Optional

from cherry_mlx._io import repair_text

COMMANDS = "/reset, /stats or /quit"


def chat_loop(
    session,
    context: Optional[int] = None,
    read: Callable[[str], str] = input,
    out=None,
    err=None,
) -> None:
    """Run ``session`` (a ``ChatSession``) until the user leaves; ``context`` is the model's
    context length (a note is printed once the conversation outgrows it)."""
    out = out or sys.stdout
    err = err or sys.stderr
    warned = False
    mode = "self-speculative (MTP heads)" if session.speculative else "plain decoding"
    print(f"cherry-mlx chat: {mode}. /reset, /stats, /quit; Ctrl-C stops an answer.", file=out)
    if read is input and sys.stdin is None:  # started with stdin closed (<&-): nothing to read
        print("[stdin is closed: no messages to answer; pipe them in or run it in a terminal]",
              file=err)  # fmt: skip
        return
    if read is input and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # bad bytes reach repair_text, not a crash
    while True:
        try:
            line = read(">>> ")
        except (EOFError, KeyboardInterrupt):
            print("", file=out)
            break
        except UnicodeDecodeError:
            print("[note: that line was not valid UTF-8 and was dropped; type it again]", file=err)
            continue
        line, repaired = repair_text(line)
        if repaired:
            print("[note: invalid UTF-8 in that line was replaced with U+FFFD]", file=err)
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in ("/quit", "/exit", "/q"):
            break
        if cmd == "/reset":
            session.reset()
            print("[conversation reset]", file=out)
            continue
        if cmd == "/stats":
            print(session.stats_text(), file=out)
            continue
        if re.fullmatch(r"/[A-Za-z_-]+", cmd):  # a mistyped command, not a message
            print(f"unknown command {cmd}: use {COMMANDS}", file=out)
            continue
        turns = len(session.messages)
        try:
            _answer(session, line, out)
        except Exception as e:  # one bad line never costs the conversation
            if len(session.messages) == turns + 1:  # no answer was recorded: forget the line
                session.messages.pop()
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"\n[error: {first}; the line was dropped, the conversation goes on]", file=err)
            continue
        if context and not warned and len(session.fed) > context:
            warned = True
            print(
                f"[note: the conversation ({len(session.fed)} tokens) is longer than the "
                f"model's context of {context}; answers degrade from here, /reset starts over]",
                file=err,
            )


def _answer(session, line: str, out) -> None:
    """Stream the answer to ``line``; Ctrl-C stops it, keeping what was said."""
    stream = session.send(line)
    try:
        for piece in stream:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        stream.close()
        out.write(" [stopped]")
    out.write("\n")
    out.flush()
