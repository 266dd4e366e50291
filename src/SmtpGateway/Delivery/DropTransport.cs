using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// Delivers by writing each message to &lt;drop&gt;/&lt;tenant&gt;/&lt;id&gt;.eml, byte for byte as spooled.
/// The file is written under drop/.tmp/ and renamed into place, so a reader never sees half a message.
/// A repeated attempt (after a crash) overwrites the same name: delivery stays idempotent.
/// </summary>
public sealed class DropTransport : IDeliveryTransport
{
    const string DefaultTenant = "default";
    const string TempDirectoryName = ".tmp";

    readonly string _root;
    readonly bool _fsync;
    readonly ILogger _logger;

    /// <summary>Directories this instance has created or found (drop/.tmp, drop/&lt;tenant&gt;): mkdir once, not per message.</summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _directories = new(StringComparer.Ordinal);

    public DropTransport(IOptions<GatewayConfig> options, ILogger<DropTransport> logger)
        : this(GatewayPaths.DropDirectory(options.Value), options.Value.Spool.Fsync, logger)
    {
    }

    internal DropTransport(string root, bool fsync, ILogger logger)
    {
        _root = Path.GetFullPath(root);
        _fsync = fsync;
        _logger = logger;
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(recipients);
        try
        {
            return await DeliverOnceAsync(message, recipients, mayRetry: true, cancellationToken).ConfigureAwait(false);
        }
        catch (DirectoryNotFoundException)
        {
            // A remembered directory was removed behind our back (an operator emptied drop/): make it again, once.
            _directories.Clear();
            return await DeliverOnceAsync(message, recipients, mayRetry: false, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>One attempt; with <paramref name="mayRetry"/> throws <see cref="DirectoryNotFoundException"/> (after cleaning up) when directories were taken from memory.</summary>
    async Task<IReadOnlyList<RecipientResult>> DeliverOnceAsync(SpooledMessage message, IReadOnlyList<string> recipients, bool mayRetry, CancellationToken cancellationToken)
    {
        var remembered = mayRetry && !_directories.IsEmpty;
        var id = message.Envelope.Id;
        var tmpDirectory = Path.Combine(_root, TempDirectoryName);
        var tmp = Path.Combine(tmpDirectory, string.Create(CultureInfo.InvariantCulture, $"{id}.{Guid.NewGuid():N}.eml"));
        try
        {
            var tenantDirectory = TenantDirectory(_root, message.Envelope.TenantId);
            var final = Path.Combine(tenantDirectory, id + ".eml");
            EnsureDirectory(tmpDirectory);
            EnsureDirectory(tenantDirectory);

            // The spool deletes its copy once this returns Delivered; the drop copy must survive a crash first.
            // The temp name is this attempt's alone: on Linux it is opened without FileStream's flock and stats.
            var handle = DurableFile.OpenForOverwrite(tmp, mustCreate: true);
            if (handle is null)
            {
                await WriteWithFileStreamAsync(message, tmp, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                using (handle)
                {
                    await CopyAsync(message, handle, cancellationToken).ConfigureAwait(false);
                    if (_fsync)
                    {
                        DurableFile.SyncFile(handle, tmp);
                    }
                }
            }

            File.Move(tmp, final, overwrite: true);
            if (_fsync)
            {
                DurableFile.SyncDirectory(tenantDirectory);
            }

            DeliveryLog.Dropped(_logger, id, final);
            return recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.Dropped)).ToArray();
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            TryDelete(tmp);
            throw;
        }
        catch (DirectoryNotFoundException) when (remembered)
        {
            TryDelete(tmp);
            throw;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            TryDelete(tmp);
            DeliveryLog.DropFailed(_logger, id, ex);
            return recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.DropFailed)).ToArray();
        }
    }

    static async Task CopyAsync(SpooledMessage message, Microsoft.Win32.SafeHandles.SafeFileHandle target, CancellationToken cancellationToken)
    {
        var source = message.OpenContent();
        await using (source.ConfigureAwait(false))
        {
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(81920);
            try
            {
                long offset = 0;
                int n;
                while ((n = await source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    RandomAccess.Write(target, buffer.AsSpan(0, n), offset);
                    offset += n;
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    async Task WriteWithFileStreamAsync(SpooledMessage message, string tmp, CancellationToken cancellationToken)
    {
        var source = message.OpenContent();
        await using (source.ConfigureAwait(false))
        {
            var target = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 81920, Options = FileOptions.Asynchronous, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite });
            await using (target.ConfigureAwait(false))
            {
                await source.CopyToAsync(target, cancellationToken).ConfigureAwait(false);
                if (_fsync)
                {
                    target.Flush(flushToDisk: true);
                }
            }
        }
    }

    void EnsureDirectory(string path)
    {
        if (_directories.ContainsKey(path))
        {
            return;
        }

        Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        _directories[path] = 0;
    }

    /// <summary>
    /// The tenant's folder under <paramref name="root"/>. Tenant ids come from our own session state, but are still
    /// reduced to [A-Za-z0-9._-] with no leading dot, so "../x" or "/etc" cannot leave the drop directory.
    /// When characters had to be replaced a hash of the original id is appended, so that two different
    /// tenants never share one folder (isolation promise 5 in ARCHITECTURE.md).
    /// </summary>
    internal static string TenantDirectory(string root, string? tenantId)
    {
        var name = TenantDirectoryName(tenantId);
        var fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        var path = Path.GetFullPath(Path.Combine(fullRoot, name));
        if (!path.StartsWith(fullRoot + Path.DirectorySeparatorChar, StringComparison.Ordinal))
        {
            throw new IOException("Tenant directory would leave the drop directory.");
        }

        return path;
    }

    internal static string TenantDirectoryName(string? tenantId)
    {
        if (string.IsNullOrEmpty(tenantId))
        {
            return DefaultTenant;
        }

        const int maxLength = 64;
        var builder = new StringBuilder(tenantId.Length);
        var changed = false;
        foreach (var c in tenantId)
        {
            var keep = char.IsAsciiLetterOrDigit(c) || c is '-' or '_' || (c == '.' && builder.Length > 0);
            builder.Append(keep ? c : '_');
            changed |= !keep;
        }

        if (builder.Length > maxLength)
        {
            builder.Length = maxLength;
            changed = true;
        }

        if (changed)
        {
            var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(tenantId)), 0, 4).ToLowerInvariant();
            builder.Append('-').Append(hash);
        }

        return builder.ToString();
    }

    void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            DeliveryLog.DropFailed(_logger, Path.GetFileName(path), ex);
        }
    }
}
