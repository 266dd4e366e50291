namespace SmtpGateway.Diagnostics;

/// <summary>
/// Event id ranges, one per stage, so that an operator can filter logs by stage without parsing text.
/// Each stage's [LoggerMessage] definitions take ids from its own range only.
/// </summary>
public static class EventIds
{
    public const int Hosting = 1000;      // 1000-1099
    public const int Configuration = 1100; // 1100-1199
    public const int Listener = 1200;     // 1200-1399
    public const int Identity = 1400;     // 1400-1499
    public const int Policy = 1500;       // 1500-1599
    public const int Envelope = 1600;     // 1600-1699
    public const int Signing = 1700;      // 1700-1799
    public const int Hsm = 1800;          // 1800-1899
    public const int Vault = 1900;        // 1900-1999
    public const int Spool = 2000;        // 2000-2099
    public const int Delivery = 2100;     // 2100-2299
    public const int Bounces = 2300;      // 2300-2399
    public const int Audit = 2400;        // 2400-2499
    public const int Admin = 2500;        // 2500-2599
    public const int Submission = 2600;   // 2600-2699
    public const int Mcp = 2700;          // 2700-2799
}
