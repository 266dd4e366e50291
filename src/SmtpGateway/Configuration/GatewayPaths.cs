namespace SmtpGateway.Configuration;

/// <summary>Resolves the directories named in config to absolute paths, in one place.</summary>
public static class GatewayPaths
{
    public static string DataDirectory(GatewayConfig config) => Path.GetFullPath(config.DataDirectory);

    public static string SpoolDirectory(GatewayConfig config) => UnderData(config, config.Spool.Directory);

    public static string DropDirectory(GatewayConfig config) => UnderData(config, config.Delivery.DropDirectory);

    static string UnderData(GatewayConfig config, string path) =>
        Path.IsPathRooted(path) ? Path.GetFullPath(path) : Path.GetFullPath(Path.Combine(DataDirectory(config), path));
}
