//! Real MCP software through the tap: server-everything (npm), the official Python SDK client,
//! rmcp as client and server.
