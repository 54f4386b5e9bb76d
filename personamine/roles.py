"""Whose turn a token belongs to. A plain text's tokens are ``text``; a conversation's are ``system``, ``user`` or
``assistant`` (a turn's content) or ``template`` (role headers, delimiters, anything else the chat template adds);
the sink prefix fed before a window is ``prefix``. Only the content roles are ever scored."""

ROLES = ("text", "system", "user", "assistant", "template", "prefix")
ROLE = {name: code for code, name in enumerate(ROLES)}
CONTENT_ROLES = ROLES[:4]  # what score_roles may name
NO_ROLE = -1  # padding
