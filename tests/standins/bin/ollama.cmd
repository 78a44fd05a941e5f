@echo off
rem Stand-in for ollama.exe: runs the Python script "ollama" next to this file.
rem Set JARVIS_STANDIN_PYTHON to choose the interpreter (default: python on PATH).
setlocal
set "_JARVIS_PY=%JARVIS_STANDIN_PYTHON%"
if "%_JARVIS_PY%"=="" set "_JARVIS_PY=python"
"%_JARVIS_PY%" "%~dp0ollama" %*
exit /b %ERRORLEVEL%
