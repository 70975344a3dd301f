/** UsageError is a bad command line: the CLI prints it with a hint and exits with status 2. */
export class UsageError extends Error {
  /** Creates the error; `message` names the argument and what is allowed. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
