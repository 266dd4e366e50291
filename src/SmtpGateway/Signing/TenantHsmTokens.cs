using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;

namespace SmtpGateway.Signing;

/// <summary>
/// Resolves a tenant's token label and PIN from the tenant snapshot (never from the message, never logged). The PIN
/// comes, in this order, from the tenant's environment variable (Tenants:&lt;id&gt;:Hsm:PinEnvironmentVariable), the
/// systemd credential $CREDENTIALS_DIRECTORY/smtpgw-&lt;tenant&gt;.pin, or, while Gateway:Hsm:AllowPinFiles is true, the
/// PIN file (Tenants:&lt;id&gt;:Hsm:PinFile, else &lt;Gateway:Hsm:PinDirectory&gt;/&lt;tenant&gt;.pin, by default in the data
/// directory's sibling "&lt;DataDirectory&gt;.pins", so a copy of the data directory carries no PIN). A PIN file or its
/// directory that group or others may access is refused. What is cached per tenant is an <see cref="HsmPin"/>: a
/// fingerprint and the source to read the bytes from at the next C_Login, renewed when a reload changes the tenant's
/// token or PIN settings.
/// </summary>
public sealed class TenantHsmTokens
{
    /// <summary>The systemd credentials directory variable (systemd.exec(5) "Credentials", LoadCredential=).</summary>
    public const string CredentialsDirectoryVariable = "CREDENTIALS_DIRECTORY";

    const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    readonly string _dataDirectory;
    readonly Func<string, TenantHsmModel?> _tenant;
    readonly Func<string?> _credentialsDirectory;
    readonly bool _allowPinFiles;
    readonly ConcurrentDictionary<string, (TenantHsmModel? Settings, HsmTenantToken Token)> _cache = new(StringComparer.Ordinal);

    /// <param name="dataDirectory">The gateway's data directory (the default PIN directory is its sibling; legacy PIN files were inside it).</param>
    /// <param name="tenants">The current tenant snapshot (the gateway's <see cref="TenantDirectoryService"/>, or the CLI's load).</param>
    /// <param name="hsm">Gateway:Hsm (PinDirectory, AllowPinFiles); null means the defaults.</param>
    public TenantHsmTokens(string dataDirectory, Func<TenantSnapshot> tenants, HsmConfig? hsm = null)
        : this(dataDirectory, tenant => tenants().Find(tenant)?.Hsm, hsm)
    {
    }

    /// <summary>Fixed settings per tenant (tests); null means the defaults. <paramref name="credentialsDirectory"/> replaces $CREDENTIALS_DIRECTORY.</summary>
    internal TenantHsmTokens(string dataDirectory, Func<string, TenantHsmModel?> tenant, HsmConfig? hsm = null, Func<string?>? credentialsDirectory = null)
    {
        _dataDirectory = Path.GetFullPath(dataDirectory);
        _tenant = tenant;
        _allowPinFiles = hsm?.AllowPinFiles ?? true;
        PinDirectory = hsm?.PinDirectory is { Length: > 0 } directory ? Path.GetFullPath(directory) : DefaultPinDirectory(_dataDirectory);
        _credentialsDirectory = credentialsDirectory ?? (() => Environment.GetEnvironmentVariable(CredentialsDirectoryVariable));
    }

    /// <summary>Where default PIN files live.</summary>
    public string PinDirectory { get; }

    /// <summary>The data directory's sibling "&lt;DataDirectory&gt;.pins": outside the data directory and the token store in it.</summary>
    public static string DefaultPinDirectory(string dataDirectory) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(dataDirectory)) + ".pins";

    /// <summary>Where PIN files were kept before: inside the data directory, beside the SoftHSM2 token store.</summary>
    public string LegacyPinDirectory => Path.Combine(_dataDirectory, "hsm", "pins");

    public static string DefaultLabel(string tenant) => $"smtpgw-{tenant}";

    /// <summary>The tenant's PIN file (explicit, or in <see cref="PinDirectory"/>), whether or not it is the source in use.</summary>
    public string PinFile(string tenant) => PinFile(tenant, _tenant(tenant));

    public string Label(string tenant) => Label(tenant, _tenant(tenant));

    /// <summary>Where the tenant's PIN would come from now ("environment variable X", "systemd credential …", "file …"), or null when no source has one.</summary>
    public string? PinSource(string tenant) => Source(tenant, _tenant(tenant))?.Description;

    public HsmTenantToken Resolve(string tenant)
    {
        var settings = _tenant(tenant);
        if (_cache.TryGetValue(tenant, out var cached) && Equals(cached.Settings, settings))
        {
            return cached.Token;
        }

        var source = Source(tenant, settings) ?? throw new SigningException(_allowPinFiles
            ? $"no HSM PIN for tenant '{tenant}' (no environment variable, systemd credential smtpgw-{tenant}.pin or PIN file {PinFile(tenant, settings)})"
            : $"no HSM PIN for tenant '{tenant}': Gateway:Hsm:AllowPinFiles is false and neither an environment variable nor the systemd credential smtpgw-{tenant}.pin supplies one");
        HsmPin pin;
        try
        {
            pin = HsmPin.FromSource(source.Description, source.Read);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            throw new SigningException($"the HSM PIN of tenant '{tenant}' cannot be read: {ex.Message}", ex);
        }

        var token = new HsmTenantToken(tenant, Label(tenant, settings), pin);
        _cache[tenant] = (settings, token);
        return token;
    }

    /// <summary>
    /// What the gateway and the CLI do before anything logs in: moves legacy PIN files out of the data directory
    /// (&lt;data&gt;/hsm/pins/&lt;tenant&gt;.pin → &lt;PinDirectory&gt;/&lt;tenant&gt;.pin, with a log line), then checks every
    /// tenant's PIN file that would be used. Returns every problem (naming file and mode, never the PIN); the caller
    /// refuses to start when there is any. <paramref name="moveLegacyFiles"/> false only checks (`smtpgw check-config`).
    /// </summary>
    public List<string> PrepareAtStart(IEnumerable<string> tenants, ILogger logger, bool moveLegacyFiles = true)
    {
        var errors = new List<string>();
        if (IsInside(PinDirectory, _dataDirectory))
        {
            errors.Add($"Gateway:Hsm:PinDirectory: '{PinDirectory}' is inside the data directory '{_dataDirectory}'; PIN files belong outside it, so that a copy of the data directory carries no PIN");
        }
        else if (moveLegacyFiles)
        {
            MoveLegacyPinFiles(logger, errors);
        }

        foreach (var tenant in tenants)
        {
            var settings = _tenant(tenant);
            try
            {
                if (Source(tenant, settings) is { } source)
                {
                    if (source.File is { } file && FileProblem(file, source.SystemdCredential) is { } problem)
                    {
                        errors.Add($"Tenants:{tenant}:Hsm: {problem}");
                        continue;
                    }

                    if (source.File is { } pinFile && pinFile == PinFile(tenant, settings) && IsInside(pinFile, _dataDirectory))
                    {
                        errors.Add($"Tenants:{tenant}:Hsm:PinFile: '{pinFile}' is inside the data directory '{_dataDirectory}'; PIN files belong outside it");
                        continue;
                    }

                    HsmLog.PinSourceChosen(logger, tenant, source.Description);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                errors.Add($"Tenants:{tenant}:Hsm: {ex.Message}");
            }
        }

        return errors;
    }

    /// <summary>
    /// Why the PIN file (or its directory) must not be used, or null when it may: a PIN file is for the gateway's user
    /// alone, so any group or other permission bit (mode &amp; 077) on the file or its directory refuses it.
    /// </summary>
    /// <remarks>
    /// A systemd credential is checked for "others" only: systemd writes it 0400 in a private 0500 directory and grants
    /// the unit's User= access with a POSIX ACL, and an ACL's mask shows up in the group bits of the mode (0440, 0550)
    /// although no group has access (systemd.exec(5), "Credentials").
    /// </remarks>
    public static string? FileProblem(string file, bool systemdCredential = false)
    {
        var refused = systemdCredential ? UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute : GroupOrOther;
        var directory = Path.GetDirectoryName(Path.GetFullPath(file))!;
        var directoryMode = File.GetUnixFileMode(directory);
        if ((directoryMode & refused) != 0)
        {
            return $"PIN directory '{directory}' has mode {Octal(directoryMode)}: group or others may access it; a PIN directory must be 0700 (chmod 700 '{directory}')";
        }

        // A symbolic link is judged by what it points at (the mode of a link itself means nothing): the file that is
        // read, and the directory holding it, must be as private as the PIN directory.
        if (new FileInfo(file).ResolveLinkTarget(returnFinalTarget: true) is { } target && !string.Equals(target.FullName, file, StringComparison.Ordinal))
        {
            if (FileProblem(target.FullName, systemdCredential) is { } problem)
            {
                return $"PIN file '{file}' is a link to '{target.FullName}': {problem}";
            }
        }

        var mode = File.GetUnixFileMode(file);
        return (mode & refused) != 0
            ? $"PIN file '{file}' has mode {Octal(mode)}: group or others may access it; a PIN file must be 0600 or 0400 (chmod 600 '{file}')"
            : null;
    }

    string PinFile(string tenant, TenantHsmModel? settings) => settings?.PinFile ?? Path.Combine(PinDirectory, tenant + ".pin");

    static string Label(string tenant, TenantHsmModel? settings) => settings?.TokenLabel ?? DefaultLabel(tenant);

    /// <summary>The first source that holds a PIN now, in the documented order; null when none does.</summary>
    PinSourceInfo? Source(string tenant, TenantHsmModel? settings)
    {
        if (settings?.PinEnvironmentVariable is { } variable && !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(variable)))
        {
            // The process environment is itself a long-lived copy (the runtime keeps it as strings); the systemd
            // credential is the better choice in production, and this reader at least makes no further copy to keep.
            return new PinSourceInfo($"environment variable {variable}", null, () =>
                HsmPin.Trim(Encoding.UTF8.GetBytes(Environment.GetEnvironmentVariable(variable)
                    ?? throw new InvalidOperationException($"environment variable {variable} is no longer set"))));
        }

        if (_credentialsDirectory() is { Length: > 0 } credentials)
        {
            var credential = Path.Combine(credentials, $"smtpgw-{tenant}.pin");
            if (File.Exists(credential))
            {
                return new PinSourceInfo($"systemd credential {credential}", credential, () => ReadPinFile(credential, systemdCredential: true), SystemdCredential: true);
            }
        }

        if (!_allowPinFiles)
        {
            return null;
        }

        var file = PinFile(tenant, settings);
        return File.Exists(file) ? new PinSourceInfo($"file {file}", file, () => ReadPinFile(file)) : null;
    }

    /// <summary>The PIN bytes of a file, refused (InvalidOperationException, naming file and mode) when group or others may access it.</summary>
    static byte[] ReadPinFile(string file, bool systemdCredential = false)
    {
        if (FileProblem(file, systemdCredential) is { } problem)
        {
            throw new InvalidOperationException(problem);
        }

        return HsmPin.Trim(File.ReadAllBytes(file));
    }

    void MoveLegacyPinFiles(ILogger logger, List<string> errors)
    {
        var legacy = LegacyPinDirectory;
        if (!Directory.Exists(legacy))
        {
            return;
        }

        foreach (var old in Directory.EnumerateFiles(legacy, "*.pin"))
        {
            var tenant = Path.GetFileNameWithoutExtension(old);
            var target = Path.Combine(PinDirectory, tenant + ".pin");
            try
            {
                if (!Directory.Exists(PinDirectory))
                {
                    Directory.CreateDirectory(PinDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                }

                if (File.Exists(target))
                {
                    if (!SameContent(old, target))
                    {
                        errors.Add($"legacy PIN file '{old}' and '{target}' both exist and differ; keep the right one in '{PinDirectory}' and delete the other");
                        continue;
                    }

                    Storage.KeyMetadataFile.ShredAndDelete(old);
                }
                else
                {
                    // Copied, then the old file overwritten with zeros before it is deleted: the PIN directory may be on
                    // another file system than the data directory (a container's volume), where a move is a copy that
                    // would leave the PIN in the data directory's freed blocks.
                    using (var copy = new FileStream(target, new FileStreamOptions
                    {
                        Mode = FileMode.CreateNew,
                        Access = FileAccess.Write,
                        UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
                    }))
                    {
                        var pin = File.ReadAllBytes(old);
                        try
                        {
                            copy.Write(pin);
                            copy.Flush(flushToDisk: true);
                        }
                        finally
                        {
                            System.Security.Cryptography.CryptographicOperations.ZeroMemory(pin);
                        }
                    }

                    Storage.KeyMetadataFile.ShredAndDelete(old);
                }

                HsmLog.LegacyPinFileMoved(logger, tenant, old, target);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                errors.Add($"legacy PIN file '{old}' cannot be moved to '{target}': {ex.Message}");
            }
        }

        if (!Directory.EnumerateFileSystemEntries(legacy).Any())
        {
            Directory.Delete(legacy);
        }
    }

    static bool SameContent(string a, string b)
    {
        var x = File.ReadAllBytes(a);
        var y = File.ReadAllBytes(b);
        try
        {
            return CryptographicOperations.FixedTimeEquals(x, y);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(x);
            CryptographicOperations.ZeroMemory(y);
        }
    }

    static bool IsInside(string path, string directory) =>
        Path.GetFullPath(path).StartsWith(Path.TrimEndingDirectorySeparator(directory) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    static string Octal(UnixFileMode mode) => "0" + Convert.ToString((int)mode & 0x1FF, 8).PadLeft(3, '0');

    /// <param name="File">The file the PIN is read from (credential or PIN file), whose mode is checked; null for a variable.</param>
    sealed record PinSourceInfo(string Description, string? File, Func<byte[]> Read, bool SystemdCredential = false);
}

/// <summary>The HSM behind <see cref="IDkimKeySigner"/>: each tenant's signatures are made in that tenant's token.</summary>
public sealed class HsmKeySigner(IHsm hsm, TenantHsmTokens tokens) : IDkimKeySigner
{
    public byte[] Sign(string tenantId, DkimSelector selector, byte[] data)
    {
        try
        {
            var token = tokens.Resolve(tenantId);
            return selector.Algorithm == DkimAlgorithm.Ed25519
                // RFC 8463 section 3: ed25519-sha256 signs the SHA-256 hash of the canonicalised data with pure Ed25519.
                ? hsm.Sign(token, selector.KeyLabel, DkimKeyAlgorithm.Ed25519, SHA256.HashData(data))
                : hsm.Sign(token, selector.KeyLabel, DkimKeyAlgorithm.Rsa2048, data);
        }
        catch (HsmException ex)
        {
            throw new SigningException($"HSM: {ex.Message}", ex);
        }
    }
}
