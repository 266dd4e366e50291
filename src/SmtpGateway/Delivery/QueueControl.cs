using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>A queue tool request: retry | retry-all | delete, with the queue id where one is needed.</summary>
internal sealed record QueueRequest(string Verb, string? Id);

/// <summary>The answer to a <see cref="QueueRequest"/>.</summary>
internal sealed record QueueResponse(bool Ok, string Message);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(QueueRequest))]
[JsonSerializable(typeof(QueueResponse))]
internal sealed partial class QueueControlJsonContext : JsonSerializerContext;

/// <summary>
/// How `smtpgw queue retry|delete` reach the spool, whether or not a gateway is running on it.
/// <para>
/// The running gateway holds a shared flock(2) on &lt;spool&gt;/control/gateway.lock and polls &lt;spool&gt;/control/ for
/// request files. A tool that can take the lock exclusively knows no gateway is running and changes the spool directly
/// (holding the lock meanwhile, so a gateway that starts waits for it); a tool that cannot writes &lt;uuid&gt;.req and
/// waits for the gateway's &lt;uuid&gt;.res.
/// </para>
/// <para>
/// Why requests rather than editing state files under a running gateway: the gateway keeps its retry schedule in memory
/// (one wake-up per message) and may be in the middle of an attempt on the very message. Only the gateway can move a
/// wake-up forward, and only it knows when no attempt is in flight, so it makes the change itself: it claims the id
/// (waiting for an attempt in flight to finish), rewrites or removes the files, then schedules it. Listing and showing
/// only read files, so they need neither the lock nor the gateway.
/// </para>
/// </summary>
internal sealed class QueueControl(FileSpool spool, TimeProvider time, ILogger logger)
{
    public const string DirectoryName = "control";
    const string LockName = "gateway.lock";
    const string RequestSuffix = ".req";
    const string ResponseSuffix = ".res";
    static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);
    static readonly TimeSpan ClaimWait = TimeSpan.FromSeconds(30);
    static readonly TimeSpan ClaimPoll = TimeSpan.FromMilliseconds(50);

    public static string ControlDirectory(string spoolRoot) => Path.Combine(spoolRoot, DirectoryName);

    /// <summary>The gateway's loop: take the lock (retrying while a tool holds it), then answer requests until stopped.</summary>
    public async Task RunAsync(DeliveryService delivery, Action? clearBackoff, CancellationToken stoppingToken)
    {
        var directory = ControlDirectory(spool.RootDirectory);
        FileStream? held = null;
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                held ??= TryLock(directory, exclusive: false);
                if (held is not null)
                {
                    foreach (var path in SafeEnumerate(directory))
                    {
                        try
                        {
                            await HandleAsync(path, delivery, clearBackoff, stoppingToken).ConfigureAwait(false);
                        }
                        catch (Exception ex) when (ex is not OperationCanceledException)
                        {
                            // One bad request must not end the loop: later `queue` commands would all time out.
                            DeliveryLog.QueueControlFailed(logger, Path.GetFileName(path), ex);
                        }
                    }
                }

                await Task.Delay(PollInterval, time, stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            held?.Dispose();
        }
    }

    static IEnumerable<string> SafeEnumerate(string directory)
    {
        try
        {
            return Directory.GetFiles(directory, "*" + RequestSuffix).Order(StringComparer.Ordinal).ToArray();
        }
        catch (IOException)
        {
            return [];
        }
    }

    async Task HandleAsync(string path, DeliveryService delivery, Action? clearBackoff, CancellationToken cancellationToken)
    {
        var name = Path.GetFileNameWithoutExtension(path);
        QueueResponse response;
        try
        {
            var request = JsonSerializer.Deserialize(await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false), QueueControlJsonContext.Default.QueueRequest)
                ?? throw new JsonException("empty request");
            response = await ExecuteAsync(spool, request, time, delivery, clearBackoff, cancellationToken).ConfigureAwait(false);
            DeliveryLog.QueueControl(logger, request.Verb, request.Id ?? "*", response.Message);
        }
        catch (Exception ex) when (ex is JsonException or IOException or UnauthorizedAccessException)
        {
            DeliveryLog.QueueControlFailed(logger, name, ex);
            response = new QueueResponse(false, $"request could not be handled: {ex.GetType().Name}");
        }

        try
        {
            var tmp = Path.Combine(Path.GetDirectoryName(path)!, name + ".tmp");
            await File.WriteAllBytesAsync(tmp, JsonSerializer.SerializeToUtf8Bytes(response, QueueControlJsonContext.Default.QueueResponse), cancellationToken)
                .ConfigureAwait(false);
            File.Move(tmp, Path.Combine(Path.GetDirectoryName(path)!, name + ResponseSuffix), overwrite: true);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Carries out <paramref name="request"/> on <paramref name="spool"/>. <paramref name="delivery"/> is the running gateway's
    /// delivery service (ids are claimed from it so that no attempt runs meanwhile), or null when no gateway runs.
    /// </summary>
    public static async Task<QueueResponse> ExecuteAsync(FileSpool spool, QueueRequest request, TimeProvider time, DeliveryService? delivery, Action? clearBackoff,
        CancellationToken cancellationToken)
    {
        switch (request.Verb)
        {
            case "retry" when request.Id is { } id:
                clearBackoff?.Invoke();
                return await RetryAsync(spool, id, time, delivery, cancellationToken).ConfigureAwait(false);
            case "retry-all":
            {
                clearBackoff?.Invoke();
                var count = 0;
                foreach (var entry in spool.List(SpoolArea.Queue))
                {
                    if ((await RetryAsync(spool, entry.Id, time, delivery, cancellationToken).ConfigureAwait(false)).Ok)
                        {
                            count++;
                        }
                    }

                return new QueueResponse(true, $"{count} message(s) due now");
            }

            case "delete" when request.Id is { } id:
                return await WithClaimAsync(id, delivery, time, cancellationToken, () =>
                {
                    var area = spool.Delete(id);
                    return Task.FromResult(area is null
                        ? new QueueResponse(false, $"{id}: no such message")
                        : new QueueResponse(true, $"{id}: deleted from {(area == SpoolArea.Queue ? "queue" : "failed")}"));
                }).ConfigureAwait(false);
            default:
                return new QueueResponse(false, $"unknown request '{request.Verb}'");
        }
    }

    static async Task<QueueResponse> RetryAsync(FileSpool spool, string id, TimeProvider time, DeliveryService? delivery, CancellationToken cancellationToken)
    {
        var response = await WithClaimAsync(id, delivery, time, cancellationToken, async () =>
        {
            var message = await spool.LoadAsync(id, cancellationToken).ConfigureAwait(false);
            if (message is null)
            {
                return spool.Peek(id) is { Entry.Area: SpoolArea.Failed }
                    ? new QueueResponse(false, $"{id}: has failed (see `queue show`); only queued messages can be retried")
                    : new QueueResponse(false, $"{id}: no such message");
            }

            // The durable schedule moves to now; the spool's wake-up for it (if a gateway runs) fires at once.
            await spool.SaveAsync(message.State with { NextAttemptAt = time.GetUtcNow() }, cancellationToken).ConfigureAwait(false);
            return new QueueResponse(true, $"{id}: due now");
        }).ConfigureAwait(false);

        // After the claim is released: a worker that took the id while it was claimed skipped it, so hand it over again.
        if (response.Ok && delivery is not null)
        {
            spool.Schedule(id, time.GetUtcNow());
        }

        return response;
    }

    static async Task<QueueResponse> WithClaimAsync(string id, DeliveryService? delivery, TimeProvider time, CancellationToken cancellationToken, Func<Task<QueueResponse>> action)
    {
        if (!FileSpool.IsValidId(id))
        {
            return new QueueResponse(false, $"'{id}' is not a queue id");
        }

        if (delivery is null)
        {
            return await action().ConfigureAwait(false);
        }

        // An attempt in flight finishes first; its outcome is then on disk for us to act on.
        // The wait runs on the injected clock, like every other timeout in the gateway.
        using var limit = new CancellationTokenSource(ClaimWait, time);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, limit.Token);
        while (!delivery.TryClaim(id))
        {
            try
            {
                await Task.Delay(ClaimPoll, time, wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return new QueueResponse(false, $"{id}: a delivery attempt is still in progress; try again");
            }
        }

        try
        {
            return await action().ConfigureAwait(false);
        }
        finally
        {
            delivery.Release(id);
        }
    }

    /// <summary>
    /// A flock(2) on &lt;control&gt;/gateway.lock: shared for the running gateway (so that anything merely reading the
    /// data directory, which .NET does under a shared lock, is never refused), exclusive for a tool acting directly.
    /// Null when it conflicts with a lock another process holds. The kernel drops it when the process dies.
    /// </summary>
    public static FileStream? TryLock(string directory, bool exclusive)
    {
        FileStream? stream = null;
        try
        {
            Directory.CreateDirectory(directory);
            stream = new FileStream(Path.Combine(directory, LockName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
            if (Native.flock((int)stream.SafeFileHandle.DangerousGetHandle(), (exclusive ? Native.LOCK_EX : Native.LOCK_SH) | Native.LOCK_NB) == 0)
            {
                return stream;
            }

            stream.Dispose();
            return null;
        }
        catch (IOException)
        {
            stream?.Dispose();
            return null;
        }
    }

    static class Native
    {
        public const int LOCK_SH = 1;
        public const int LOCK_EX = 2;
        public const int LOCK_NB = 4;

#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; this signature marshals without it.
        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        public static extern int flock(int fd, int operation);
#pragma warning restore SYSLIB1054
    }

    /// <summary>
    /// The tool's side: carry out <paramref name="request"/> directly when no gateway holds the lock, else hand it to the
    /// running gateway and wait up to <paramref name="timeout"/> for its answer.
    /// </summary>
    public static async Task<QueueResponse> SubmitAsync(FileSpool spool, QueueRequest request, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        var directory = ControlDirectory(spool.RootDirectory);
        using (var held = TryLock(directory, exclusive: true))
        {
            if (held is not null)
            {
                return await ExecuteAsync(spool, request, time, delivery: null, clearBackoff: null, cancellationToken).ConfigureAwait(false);
            }
        }

        var name = Guid.NewGuid().ToString("N");
        var tmp = Path.Combine(directory, name + ".tmp");
        var requestPath = Path.Combine(directory, name + RequestSuffix);
        var responsePath = Path.Combine(directory, name + ResponseSuffix);
        await File.WriteAllBytesAsync(tmp, JsonSerializer.SerializeToUtf8Bytes(request, QueueControlJsonContext.Default.QueueRequest), cancellationToken).ConfigureAwait(false);
        File.Move(tmp, requestPath);
        // The answer timeout runs on the injected clock (monotonic, unlike the wall clock, which a clock step moves).
        var start = time.GetTimestamp();
        while (time.GetElapsedTime(start) < timeout)
        {
            if (File.Exists(responsePath))
            {
                var response = JsonSerializer.Deserialize(await File.ReadAllBytesAsync(responsePath, cancellationToken).ConfigureAwait(false),
                    QueueControlJsonContext.Default.QueueResponse);
                File.Delete(responsePath);
                return response ?? new QueueResponse(false, "empty answer from the gateway");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100), time, cancellationToken).ConfigureAwait(false);
        }

        try
        {
            File.Delete(requestPath);
        }
        catch (IOException)
        {
        }

        return new QueueResponse(false, $"the running gateway did not answer within {timeout.TotalSeconds:0}s");
    }
}
