"""Errors dpsql shows to analysts: each carries a PostgreSQL SQLSTATE, a message and a hint.

The message of every error here is written by dpsql itself. Text produced by an execution
engine (which can quote private values) is never placed in one of these errors.
"""

from __future__ import annotations


class DPSQLError(Exception):
    """Base class: an error with a SQLSTATE, a one-line message and an optional hint."""

    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, hint: str | None = None, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class QuerySyntaxError(DPSQLError):
    """The SQL does not parse (42601)."""

    sqlstate = "42601"


class InsufficientPrivilege(DPSQLError):
    """The user may not run this statement or read this object (42501)."""

    sqlstate = "42501"


class PrivacyViolation(InsufficientPrivilege):
    """The query would read private rows raw, or cannot be protected (42501)."""

    sqlstate = "42501"


class CardinalityViolation(DPSQLError):
    """A scalar subquery returned more than one row (21000, PostgreSQL's message)."""

    sqlstate = "21000"


class UnsupportedQuery(DPSQLError):
    """The SQL is valid but outside the subset dpsql can rewrite (0A000)."""

    sqlstate = "0A000"


class UndefinedTable(DPSQLError):
    """A table that the policy does not expose (42P01)."""

    sqlstate = "42P01"


class UndefinedColumn(DPSQLError):
    """A column that the policy does not expose (42703)."""

    sqlstate = "42703"


class UndefinedFunction(DPSQLError):
    """A function or operator that dpsql does not allow (42883)."""

    sqlstate = "42883"


class DatatypeMismatch(DPSQLError):
    """Operands of incompatible types (42804)."""

    sqlstate = "42804"


class InvalidParameterValue(DPSQLError):
    """A session setting or query parameter with a bad value (22023)."""

    sqlstate = "22023"


class DivisionByZero(DPSQLError):
    """Division (or modulo) by zero, as PostgreSQL reports it (22012)."""

    sqlstate = "22012"


class NumericValueOutOfRange(DPSQLError):
    """A number does not fit its type, e.g. ``bigint out of range`` (22003)."""

    sqlstate = "22003"


class InvalidTextRepresentation(DPSQLError):
    """Text that does not parse as the required type, e.g. ``invalid input syntax for type bigint`` (22P02)."""

    sqlstate = "22P02"


class InvalidLimitValue(DPSQLError):
    """``LIMIT`` below zero (2201W: invalid_row_count_in_limit_clause)."""

    sqlstate = "2201W"


class InvalidOffsetValue(DPSQLError):
    """``OFFSET`` below zero (2201X: invalid_row_count_in_result_offset_clause)."""

    sqlstate = "2201X"


class InvalidArgumentForLogarithm(DPSQLError):
    """Logarithm of zero or of a negative number (2201E)."""

    sqlstate = "2201E"


class InvalidArgumentForPowerFunction(DPSQLError):
    """Square root of a negative number, or another invalid power argument (2201F)."""

    sqlstate = "2201F"


class BudgetExhausted(DPSQLError):
    """A privacy filter refuses the query: its budget would be overspent (class 53)."""

    sqlstate = "53400"


class LimitExceeded(DPSQLError):
    """A resource limit (statement size, AST size, released groups) was exceeded (54000)."""

    sqlstate = "54000"


class StatementTooComplex(LimitExceeded):
    """The statement's per-row cost or nesting exceeds a limit derived from the query text (54001)."""

    sqlstate = "54001"


class DatetimeFieldOverflow(DPSQLError):
    """A date/time field value out of range, e.g. make_date(2023, 2, 29) (22008)."""

    sqlstate = "22008"


class InvalidArgumentForWidthBucket(DPSQLError):
    """width_bucket's bounds are equal or its bucket count is not positive (2201G)."""

    sqlstate = "2201G"


class SubstringError(DPSQLError):
    """A negative substring length (22011)."""

    sqlstate = "22011"


class QueryCanceled(DPSQLError):
    """Statement timeout or cancel request (57014). The query's charge stands."""

    sqlstate = "57014"


class ExecutionFailed(DPSQLError):
    """The engine failed; the cause is not shown because engine text may quote private data (XX000)."""

    sqlstate = "XX000"


class LedgerUnavailable(DPSQLError):
    """The budget ledger is missing, corrupt or unreachable; dpsql fails closed (58000)."""

    sqlstate = "58000"


class ConfigFileError(DPSQLError):
    """A configuration file (policy, TLS material, audit settings) is unusable (F0000)."""

    sqlstate = "F0000"


class PolicyError(ConfigFileError):
    """The policy file is invalid; the message names the file, the key and the problem (F0000)."""

    sqlstate = "F0000"

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + problem, hint="fix the policy file and run `dpsql check --policy FILE`")


class AuthenticationFailed(DPSQLError):
    """Password or user refused (28P01)."""

    sqlstate = "28P01"


class AuditLogUnavailable(DPSQLError):
    """The audit log's hash chain is broken, or the log cannot be read or written; dpsql does not
    run without an intact operators' trail (58000)."""

    sqlstate = "58000"


class UndefinedObject(DPSQLError):
    """A named object (setting, type, role …) does not exist (42704)."""

    sqlstate = "42704"


class NoActiveTransaction(DPSQLError):
    """The statement needs a transaction block and none is open (25P01)."""

    sqlstate = "25P01"


class ActiveTransaction(DPSQLError):
    """The statement cannot run inside a transaction block (25001)."""

    sqlstate = "25001"


class InFailedTransaction(DPSQLError):
    """The transaction has failed; commands are ignored until its end (25P02)."""

    sqlstate = "25P02"


class UndefinedParameter(DPSQLError):
    """A statement refers to a parameter that was not supplied (42P02)."""

    sqlstate = "42P02"


class CantChangeRuntimeParam(DPSQLError):
    """The setting is fixed by the policy or the server and cannot be changed (55P02)."""

    sqlstate = "55P02"


class InvalidCursorName(DPSQLError):
    """No portal (cursor) of that name exists (34000)."""

    sqlstate = "34000"


class DuplicateCursor(DPSQLError):
    """A portal (cursor) of that name already exists (42P03)."""

    sqlstate = "42P03"


class InvalidStatementName(DPSQLError):
    """No prepared statement of that name exists (26000)."""

    sqlstate = "26000"


class DuplicatePreparedStatement(DPSQLError):
    """A prepared statement of that name already exists (42P05)."""

    sqlstate = "42P05"


class CharacterNotInRepertoire(DPSQLError):
    """Text is not valid in the session's encoding (22021)."""

    sqlstate = "22021"


class ProtocolViolation(DPSQLError):
    """The client broke the PostgreSQL wire protocol (08P01)."""

    sqlstate = "08P01"


class ConnectionFailure(DPSQLError):
    """The connection cannot continue (08006)."""

    sqlstate = "08006"


class InternalError(DPSQLError):
    """A fault inside dpsql; the message never carries engine text (XX000)."""

    sqlstate = "XX000"


class InvalidAuthorization(DPSQLError):
    """The user is not allowed to connect in this way (28000)."""

    sqlstate = "28000"


class InvalidEscapeSequence(DPSQLError):
    """A LIKE escape is malformed (22025)."""

    sqlstate = "22025"


class OutOfMemory(DPSQLError):
    """The query would need more memory than the limit allows; the fixed error, not a data-dependent one (53200)."""

    sqlstate = "53200"


class GroupingError(DPSQLError):
    """A column must appear in GROUP BY or be used in an aggregate (42803)."""

    sqlstate = "42803"


class AmbiguousColumn(DPSQLError):
    """A column reference matches more than one table (42702)."""

    sqlstate = "42702"


class InvalidSchemaName(DPSQLError):
    """The schema does not exist (3F000)."""

    sqlstate = "3F000"


class InvalidSavepoint(DPSQLError):
    """The savepoint does not exist (3B001)."""

    sqlstate = "3B001"


class InvalidBinaryRepresentation(DPSQLError):
    """A binary-format parameter value is malformed (22P03)."""

    sqlstate = "22P03"


class NullValueNotAllowed(DPSQLError):
    """A NULL was given where a value is required (22004)."""

    sqlstate = "22004"


class DataException(DPSQLError):
    """A value is invalid for the operation (data exception) (22000)."""

    sqlstate = "22000"


class ReleaseRefused(DataException):
    """The embedding API refused to release rows: they do not have the shape the release plan
    states, or the release token was already used (22000). The message names columns and counts,
    never a value from the rows."""

    sqlstate = "22000"
