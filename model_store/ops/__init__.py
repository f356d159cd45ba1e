"""Operations over a running fleet: status, verify on a GPU, boot logs, chat, AWS error lines."""
