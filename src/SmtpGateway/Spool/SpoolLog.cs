using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Spool;

/// <summary>Spool log messages; event ids 2000-2099 (<see cref="EventIds.Spool"/>). Never logs message content.</summary>
internal static partial class SpoolLog
{
    [LoggerMessage(EventId = EventIds.Spool + 0, Level = LogLevel.Information,
        Message = "Spool recovery in {Directory}: {Due} messages due now, {Scheduled} scheduled for later, {PartialRemoved} partial writes removed, {Corrupt} corrupt files moved aside")]
    public static partial void Recovered(ILogger logger, string directory, int due, int scheduled, int partialRemoved, int corrupt);

    [LoggerMessage(EventId = EventIds.Spool + 1, Level = LogLevel.Debug, Message = "Removed partial write {File} (never acknowledged to the client)")]
    public static partial void PartialRemoved(ILogger logger, string file);

    [LoggerMessage(EventId = EventIds.Spool + 2, Level = LogLevel.Error, Message = "Corrupt queue file {Id} moved to {Destination}: {Reason}")]
    public static partial void CorruptMovedAside(ILogger logger, string id, string destination, string reason);

    [LoggerMessage(EventId = EventIds.Spool + 3, Level = LogLevel.Error, Message = "Could not spool message {Id}; the client gets a temporary failure")]
    public static partial void CommitFailed(ILogger logger, string id, Exception exception);

    [LoggerMessage(EventId = EventIds.Spool + 4, Level = LogLevel.Warning, Message = "Delivery state of {Id} unreadable or stale ({Reason}); starting over (recipients may receive a duplicate)")]
    public static partial void StateReset(ILogger logger, string id, string reason);

    [LoggerMessage(EventId = EventIds.Spool + 5, Level = LogLevel.Debug, Message = "Removed orphan delivery state {Id}")]
    public static partial void OrphanStateRemoved(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Spool + 6, Level = LogLevel.Debug, Message = "Queued {Id}: {Recipients} recipients, {Size} bytes")]
    public static partial void Committed(ILogger logger, string id, int recipients, long size);

    [LoggerMessage(EventId = EventIds.Spool + 7, Level = LogLevel.Information, Message = "Message {Id} delivered to every recipient; removed from the queue")]
    public static partial void Completed(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Spool + 8, Level = LogLevel.Warning, Message = "Message {Id} has failed recipients; moved to the failed area")]
    public static partial void MovedToFailed(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Spool + 9, Level = LogLevel.Warning, Message = "Could not remove {File}")]
    public static partial void CleanupFailed(ILogger logger, string file, Exception exception);

    [LoggerMessage(EventId = EventIds.Spool + 10, Level = LogLevel.Error, Message = "Could not move corrupt queue file {Id} aside")]
    public static partial void MoveAsideFailed(ILogger logger, string id, Exception exception);

    [LoggerMessage(EventId = EventIds.Spool + 11, Level = LogLevel.Information, Message = "Spool sync {Sync}: {Reason}")]
    public static partial void SyncChosen(ILogger logger, Configuration.SpoolSync sync, string reason);

    [LoggerMessage(EventId = EventIds.Spool + 12, Level = LogLevel.Warning, Message = "Spool sync {Sync} instead of the configured FileSystem: {Reason}")]
    public static partial void SyncOverruled(ILogger logger, Configuration.SpoolSync sync, string reason);
}
