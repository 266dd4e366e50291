using System.Buffers;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Spool;
using SmtpGateway.Storage;

namespace SmtpGateway.Tests.Spool;

/// <summary>A fresh directory under the system temp directory, removed on dispose.</summary>
public sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "smtpgw-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        // A background writer (a worker finishing, a timer) may still add a file while the tree is removed: retry briefly.
        for (var attempt = 0; attempt < 5 && Directory.Exists(Path); attempt++)
        {
            try
            {
                Directory.Delete(Path, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Thread.Sleep(20);
            }
        }
    }
}

public static class SpoolTestKit
{
    public static FileSpool NewSpool(string root, TimeProvider? time = null, bool fsync = true, Action<string>? syncDirectory = null, long cacheLimit = FileSpool.DefaultCommittedCacheLimit,
        SpoolSync sync = SpoolSync.File, Action<string>? syncFileSystem = null) =>
        new(root, fsync, time ?? new ManualTimeProvider(), NullLogger.Instance, syncDirectory, cacheLimit, sync, syncFileSystem);

    public static SpoolEnvelope NewEnvelope(FileSpool spool, TimeProvider time, string[]? recipients = null, string mailFrom = "sender@tenant-a.example",
        string? tenant = null, bool eightBitMime = false, bool smtpUtf8 = false) =>
        new(spool.NewId(), tenant, mailFrom, recipients ?? ["rcpt@example.net"], time.GetUtcNow(), "127.0.0.1", "relay", smtpUtf8, eightBitMime);

    /// <summary>A message given to the spool in several segments, like a pipe reader hands it over.</summary>
    public static ReadOnlySequence<byte> Segmented(byte[] bytes, int segmentSize = 7) =>
        ByteSequence.Of([.. Enumerable.Range(0, (bytes.Length + segmentSize - 1) / segmentSize)
            .Select(i => (ReadOnlyMemory<byte>)bytes.AsMemory(i * segmentSize, Math.Min(segmentSize, bytes.Length - (i * segmentSize))))]);

    public static byte[] SampleMessage(string subject = "Hello") => Encoding.UTF8.GetBytes(
        "From: <sender@tenant-a.example>\r\n" +
        "To: <rcpt@example.net>\r\n" +
        $"Subject: {subject}\r\n" +
        "Message-ID: <1@tenant-a.example>\r\n" +
        "\r\n" +
        "Hello, world.\r\n");

    public static async Task<byte[]> ReadContentAsync(SpooledMessage message)
    {
        await using var stream = message.OpenContent();
        using var copy = new MemoryStream();
        await stream.CopyToAsync(copy);
        return copy.ToArray();
    }
}
