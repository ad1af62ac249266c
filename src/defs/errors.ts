/**
 * The one error type of start-up (docs/architecture.md, "Errors"). Every failure that stops the
 * proxy before it serves is an {@link IngressError}: a stable `code` (for tests and logs), a
 * one-line message that names the flag or file and the reason, and the exit status the CLI
 * returns (README, "Command line"): 2 for bad input (a flag, a variable, a file it names), 1 for
 * the environment (a port in use, a missing program or capability).
 */
export const ExitStatus = {
  /** A flag, environment variable or a file one names is wrong: fix the input. */
  BadInput: 2,
  /** The input is fine, the machine is not (port in use, no nft, no capability). */
  Environment: 1,
} as const;
export type ExitStatus = (typeof ExitStatus)[keyof typeof ExitStatus];

export class IngressError extends Error {
  readonly code: string;
  readonly exitStatus: ExitStatus;

  constructor(code: string, message: string, exitStatus: ExitStatus) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.exitStatus = exitStatus;
  }
}

/** Bad input: exit 2. */
export class BadInputError extends IngressError {
  constructor(code: string, message: string) {
    super(code, message, ExitStatus.BadInput);
  }
}

/** The environment refuses: exit 1. */
export class EnvironmentError extends IngressError {
  constructor(code: string, message: string) {
    super(code, message, ExitStatus.Environment);
  }
}
